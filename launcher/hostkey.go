package launcher

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host key errors. Each is wrapped in an error that names the host, the key
// it offered and what to do.
var (
	// ErrHostKeyUnknown: the known_hosts file has no key for the host.
	ErrHostKeyUnknown = errors.New("ssh host key is unknown")
	// ErrHostKeyChanged: the known_hosts file has a different key for the
	// host, which can mean a man-in-the-middle attack.
	ErrHostKeyChanged = errors.New("ssh host key has CHANGED")
	// ErrHostKeyRevoked: the known_hosts file marks the host's key @revoked.
	ErrHostKeyRevoked = errors.New("ssh host key is revoked")
)

// knownHostsCheck returns a host key callback that accepts only the keys
// that file lists for the host, with errors an operator can act on, and the
// host key algorithms to ask the server for, so that it offers the type of
// key that file holds rather than another type that would look "changed".
// The file is read on every call, so edits apply to the next connection.
func knownHostsCheck(file, addr string) (ssh.HostKeyCallback, []string, error) {
	kh, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, fmt.Errorf("known hosts file %s: %w (add the host's key to it, checking its fingerprint first, or pass --known-hosts)", file, err)
	}
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := kh(hostname, remote, key)
		var (
			ke *knownhosts.KeyError
			re *knownhosts.RevokedError
		)
		switch {
		case errors.As(err, &ke) && len(ke.Want) == 0:
			return fmt.Errorf("%w: %s offered %s key %s, which %s does not list. Check this fingerprint with the host's administrator, then add the key to %s, e.g. this line: %s",
				ErrHostKeyUnknown, hostname, key.Type(), ssh.FingerprintSHA256(key), file, file,
				knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key))
		case errors.As(err, &ke):
			var known []string
			for _, w := range ke.Want {
				known = append(known, fmt.Sprintf("%s:%d (%s %s)", w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key)))
			}
			return fmt.Errorf("%w: %s offered %s key %s, but %s holds another key for it: %s. Someone may be intercepting the connection; if the host was reinstalled, remove the old line (ssh-keygen -R %s -f %s) and add its new key after checking the fingerprint",
				ErrHostKeyChanged, hostname, key.Type(), ssh.FingerprintSHA256(key), file, strings.Join(known, ", "),
				knownhosts.Normalize(hostname), file)
		case errors.As(err, &re):
			return fmt.Errorf("%w: %s offered %s key %s, marked @revoked at %s:%d", ErrHostKeyRevoked, hostname, key.Type(),
				ssh.FingerprintSHA256(key), re.Revoked.Filename, re.Revoked.Line)
		}
		return err
	}
	return cb, knownAlgorithms(kh, addr), nil
}

// knownAlgorithms returns the host key algorithms of the keys that kh holds
// for addr, or nil if it holds none. x/crypto/ssh has no lookup, so this asks
// kh about a key that cannot match and reads the keys it wanted instead.
func knownAlgorithms(kh ssh.HostKeyCallback, addr string) []string {
	var ke *knownhosts.KeyError
	if err := kh(addr, addrString(addr), probeKey{}); !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	for _, w := range ke.Want {
		switch t := w.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			// An RSA key is offered under its SHA-2 signature algorithms.
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

// addrString is a net.Addr for a "host:port" string.
type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }

// probeKey is a public key that matches no known_hosts line.
type probeKey struct{}

func (probeKey) Type() string                        { return "baton-probe" }
func (probeKey) Marshal() []byte                     { return []byte("baton-probe-key") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key verifies nothing") }
