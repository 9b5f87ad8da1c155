// Package sshtest runs a real OpenSSH sshd on 127.0.0.1 for tests: a host
// key and a user key generated in a temp dir, a config of its own on a free
// port, sshd in the foreground, killed by PID when the test ends.
//
// sshd must be installed (Debian: openssh-server; .ci/install-sshd.sh). If it
// is missing, Start fails the test with what to install, unless
// BATON_SKIP_SSHD=1 asks to skip the SSH tests instead.
package sshtest

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/batonproxy/baton/internal/syncbuf"
)

// SSHD is where Debian installs the OpenSSH server.
const SSHD = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	Addr        string // 127.0.0.1:PORT
	User        string // the user running the test, who may log in
	Target      string // User@Addr
	HostKey     ssh.PublicKey
	UserKeyFile string // private key file that the server accepts
	UserSigner  ssh.Signer
	KnownHosts  string // known_hosts file listing HostKey for Addr
	Dir         string
}

// Start starts sshd and returns once it answers with its banner.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(SSHD); err != nil {
		if os.Getenv("BATON_SKIP_SSHD") == "1" {
			t.Skipf("%s not found and BATON_SKIP_SSHD=1: skipping the SSH test", SSHD)
		}
		t.Fatalf("%s not found: the SSH tests need a real OpenSSH server; install it with `apt-get install openssh-server openssh-client` (see .ci/install-sshd.sh), or set BATON_SKIP_SSHD=1 to skip them", SSHD)
	}
	if os.Geteuid() == 0 {
		// sshd's privilege separation directory; a reboot empties /run.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("create /run/sshd: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{User: u.Username, Dir: dir}
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	hostSigner := WriteKey(t, hostKeyFile)
	s.HostKey = hostSigner.PublicKey()
	s.UserKeyFile = filepath.Join(dir, "user_ed25519")
	s.UserSigner = WriteKey(t, s.UserKeyFile)
	authorized := filepath.Join(dir, "authorized_keys")
	writeFile(t, authorized, ssh.MarshalAuthorizedKey(s.UserSigner.PublicKey()))

	s.Addr = freeAddr(t)
	s.Target = s.User + "@" + s.Addr
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	writeFile(t, s.KnownHosts, []byte(KnownHostsLine(s.Addr, s.HostKey)+"\n"))

	cfg := filepath.Join(dir, "sshd_config")
	_, port, _ := net.SplitHostPort(s.Addr)
	conf := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel VERBOSE
`, port, hostKeyFile, filepath.Join(dir, "sshd.pid"), authorized)
	writeFile(t, cfg, []byte(conf))
	// OpenSSH 9.8 and later shut out a source address after failed logins;
	// the tests fail some on purpose. Older versions do not know the option.
	if exec.Command(SSHD, "-t", "-f", cfg, "-o", "PerSourcePenalties=no").Run() == nil {
		writeFile(t, cfg, []byte(conf+"PerSourcePenalties no\n"))
	}

	var out syncbuf.Buffer
	cmd := exec.Command(SSHD, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("sshd output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if banner(s.Addr) {
			return s
		}
		select {
		case <-done:
			t.Fatalf("sshd exited at start:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not answer on %s within 10s:\n%s", s.Addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// KnownHostsLine returns the known_hosts line for key at addr (host:port).
func KnownHostsLine(addr string, key ssh.PublicKey) string {
	return knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)
}

// WriteKey generates an ed25519 key, writes it to file in OpenSSH format
// (0600) and returns its signer.
func WriteKey(t testing.TB, file string) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, pem.EncodeToMemory(block))
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// NewHostKey returns a fresh public key, e.g. to write a known_hosts file
// that holds the wrong key for a host.
func NewHostKey(t testing.TB) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// StartAgent serves an in-memory ssh-agent holding signer's key on a unix
// socket and returns the socket's path, for SSH_AUTH_SOCK.
func StartAgent(t testing.TB, keyFile string) string {
	t.Helper()
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	// A short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = agent.ServeAgent(kr, c)
			}()
		}
	}()
	return sock
}

func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
