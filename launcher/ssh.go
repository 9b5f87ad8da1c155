package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/batonproxy/baton/state"
)

// Defaults for SSHConfig.
const (
	DefaultSSHDir         = "baton"
	DefaultSSHDialTimeout = 15 * time.Second
	// sshPoll is how often Wait asks the host whether the instance runs.
	sshPoll = 250 * time.Millisecond
)

// SSHConfig configures an SSH launcher.
type SSHConfig struct {
	// Target is user@host[:port]; the user defaults to the local user and
	// the port to 22.
	Target string
	// KeyFile is an unencrypted private key. Empty means the keys of the
	// ssh-agent at $SSH_AUTH_SOCK.
	KeyFile string
	// KnownHosts is the known_hosts file that must list the host's key;
	// empty means ~/.ssh/known_hosts.
	KnownHosts string
	// InsecureIgnoreHostKey accepts any host key. It exposes the deploy to
	// a man-in-the-middle and is never implied by anything else.
	InsecureIgnoreHostKey bool
	// Command is the command template; see the package documentation.
	Command string
	// Dir is the base directory on the host, relative to the login
	// directory unless absolute; empty means DefaultSSHDir.
	Dir string
	// Env holds extra KEY=VALUE variables for every instance.
	Env []string
	// KeepReleases is how many of the newest releases Prune keeps on the
	// host besides the ones in use; 0 means DefaultKeepReleases, negative
	// keeps all.
	KeepReleases int
	// DialTimeout bounds connecting and the SSH handshake; zero means
	// DefaultSSHDialTimeout.
	DialTimeout time.Duration
	// Logger receives the launcher's own log lines; nil discards them.
	Logger *slog.Logger
}

// SSH starts instances on one remote host. It keeps one SSH connection to
// the host, opened on first use and opened again after it drops. Create it
// with NewSSH; it is safe for concurrent use.
type SSH struct {
	cfg     SSHConfig
	user    string
	addr    string // host:port
	label   string // user@host:port, recorded as the instances' Host
	signers []ssh.Signer
	logger  *slog.Logger

	mu     sync.Mutex // guards the fields below; held while dialling
	client *ssh.Client
	sftp   *sftp.Client
	base   string // absolute remote base directory, resolved on first connect
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// NewSSH checks cfg, reporting every problem at once, and loads the key. It
// does not connect.
func NewSSH(cfg SSHConfig) (*SSH, error) {
	s := &SSH{cfg: cfg, logger: cfg.Logger}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.cfg.Dir == "" {
		s.cfg.Dir = DefaultSSHDir
	}
	if s.cfg.DialTimeout <= 0 {
		s.cfg.DialTimeout = DefaultSSHDialTimeout
	}
	var errs []error
	var err error
	if s.user, s.addr, err = ParseSSHTarget(cfg.Target); err != nil {
		errs = append(errs, err)
	}
	s.label = s.user + "@" + s.addr
	if err := CheckCommand(cfg.Command); err != nil {
		errs = append(errs, err)
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || !envKeyRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("environment entry %q: want KEY=VALUE", kv))
		}
	}
	switch {
	case cfg.KeyFile != "":
		signer, err := loadKey(cfg.KeyFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			s.signers = []ssh.Signer{signer}
		}
	case os.Getenv("SSH_AUTH_SOCK") == "":
		errs = append(errs, errors.New("no SSH key: pass --ssh-key FILE or run an ssh-agent (SSH_AUTH_SOCK is not set)"))
	}
	if cfg.InsecureIgnoreHostKey {
		s.logger.Warn("SSH host key checking is OFF (--ssh-insecure-ignore-host-key): anyone on the network path can impersonate the host", "host", s.addr)
	} else {
		if s.cfg.KnownHosts == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				errs = append(errs, fmt.Errorf("find ~/.ssh/known_hosts: %w; pass --known-hosts", err))
			}
			s.cfg.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
		}
		if _, _, err := knownHostsCheck(s.cfg.KnownHosts, s.addr); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ssh launcher: %w", err)
	}
	return s, nil
}

// ParseSSHTarget splits user@host[:port] into the user (default: the local
// user) and host:port (default port 22). An IPv6 host needs brackets.
func ParseSSHTarget(target string) (usr, addr string, err error) {
	usr, host, ok := strings.Cut(target, "@")
	if !ok {
		host, usr = target, ""
	}
	if usr == "" {
		u, err := user.Current()
		if err != nil {
			return "", "", fmt.Errorf("ssh target %q: no user given and the local user is unknown: %w", target, err)
		}
		usr = u.Username
	}
	if host == "" {
		return "", "", fmt.Errorf("ssh target %q: want user@host[:port]", target)
	}
	if h, p, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || h == "" {
			return "", "", fmt.Errorf("ssh target %q: bad host or port", target)
		}
		return usr, host, nil
	}
	if strings.Contains(strings.Trim(host, "[]"), ":") && !strings.HasPrefix(host, "[") {
		return "", "", fmt.Errorf("ssh target %q: put an IPv6 address in brackets: user@[::1]:22", target)
	}
	return usr, net.JoinHostPort(strings.Trim(host, "[]"), "22"), nil
}

func loadKey(file string) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	var pme *ssh.PassphraseMissingError
	if errors.As(err, &pme) {
		return nil, fmt.Errorf("ssh key %s is protected by a passphrase: load it into ssh-agent (ssh-add) and omit --ssh-key", file)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", file, err)
	}
	return signer, nil
}

// String returns "ssh user@host:port".
func (s *SSH) String() string { return "ssh " + s.label }

// Close closes the SSH connection, if open. Instances keep running; a later
// call opens a new connection.
func (s *SSH) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		return nil
	}
	s.sftp.Close()
	err := s.client.Close()
	s.client, s.sftp = nil, nil
	return err
}

// conn returns the open connection, dialling if there is none.
func (s *SSH) conn(ctx context.Context) (*ssh.Client, *sftp.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client != nil {
		return s.client, s.sftp, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	sc, err := sftp.NewClient(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("ssh %s: sftp: %w", s.label, err)
	}
	if s.base == "" {
		base, err := resolveDir(sc, s.cfg.Dir)
		if err != nil {
			sc.Close()
			c.Close()
			return nil, nil, fmt.Errorf("ssh %s: base directory %s: %w", s.label, s.cfg.Dir, err)
		}
		s.base = base
	}
	s.client, s.sftp = c, sc
	go func() {
		err := c.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.client == c {
			s.logger.Warn("ssh connection closed; the next operation reconnects", "host", s.label, "err", err)
			s.client, s.sftp = nil, nil
		}
	}()
	s.logger.Info("ssh connected", "host", s.label)
	return c, sc, nil
}

func resolveDir(sc *sftp.Client, dir string) (string, error) {
	if err := sc.MkdirAll(dir); err != nil {
		return "", err
	}
	return sc.RealPath(dir)
}

// drop forgets c if it is the open connection and closes it, so that the
// next operation dials again.
func (s *SSH) drop(c *ssh.Client) {
	s.mu.Lock()
	if s.client == c {
		s.sftp.Close()
		s.client, s.sftp = nil, nil
	}
	s.mu.Unlock()
	c.Close()
}

// broken reports whether c no longer works, so that a failed operation is
// worth one retry on a new connection.
func broken(c *ssh.Client) bool {
	_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	return err != nil
}

func (s *SSH) dial(ctx context.Context) (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{User: s.user, Timeout: s.cfg.DialTimeout}
	if s.cfg.InsecureIgnoreHostKey {
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	} else {
		cb, algos, err := knownHostsCheck(s.cfg.KnownHosts, s.addr)
		if err != nil {
			return nil, err
		}
		cfg.HostKeyCallback, cfg.HostKeyAlgorithms = cb, algos
	}
	if len(s.signers) > 0 {
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(s.signers...)}
	} else {
		sock := os.Getenv("SSH_AUTH_SOCK")
		ac, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("ssh-agent at %s: %w", sock, err)
		}
		defer ac.Close() // only needed for the handshake
		cfg.Auth = []ssh.AuthMethod{ssh.PublicKeysCallback(agent.NewClient(ac).Signers)}
	}
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", s.label, err)
	}
	_ = nc.SetDeadline(time.Now().Add(s.cfg.DialTimeout))
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(nc, s.addr, cfg)
	stop()
	if err != nil {
		nc.Close()
		if errors.Is(err, ErrHostKeyUnknown) || errors.Is(err, ErrHostKeyChanged) || errors.Is(err, ErrHostKeyRevoked) {
			// Already says which host, which key and what to do.
			return nil, unwrapHandshake(err)
		}
		if strings.Contains(err.Error(), "no common algorithm for host key") {
			return nil, fmt.Errorf("%w: %s offers none of the host key types that %s lists for it: %v", ErrHostKeyChanged, s.addr, s.cfg.KnownHosts, err)
		}
		return nil, fmt.Errorf("ssh %s: %w", s.label, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), nil
}

// unwrapHandshake drops x/crypto's "ssh: handshake failed:" prefix.
func unwrapHandshake(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// exitStatus reports the exit status of a remote command that ran and
// exited with a status; ok is false for any other error.
func exitStatus(err error) (status int, ok bool) {
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), true
	}
	return 0, false
}

// run runs a POSIX shell script on the host and returns its stdout. A
// script that exits non-zero returns an *ssh.ExitError wrapped with its
// stderr. If the connection turns out to be broken before the script was
// sent, run reconnects once.
func (s *SSH) run(ctx context.Context, script string) (string, error) {
	var sess *ssh.Session
	for attempt := 0; ; attempt++ {
		c, _, err := s.conn(ctx)
		if err != nil {
			return "", err
		}
		sess, err = c.NewSession()
		if err == nil {
			break
		}
		s.drop(c)
		if attempt == 1 {
			return "", fmt.Errorf("ssh %s: open session: %w", s.label, err)
		}
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	// The login shell may not be a POSIX shell; sh runs the script.
	err := sess.Run("sh -c " + shellQuote(script))
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return stdout.String(), fmt.Errorf("%w: %s", err, msg)
		}
		return stdout.String(), err
	}
	return stdout.String(), nil
}

// Start uploads spec.Artifact over SFTP to releases/VERSION/ under the
// base directory (a temp name, then a rename), then starts the command
// detached (setsid, output to logs/...), so that it outlives the SSH
// session, and records its PID. The host must be Linux with a POSIX sh,
// setsid and /proc.
func (s *SSH) Start(ctx context.Context, spec Spec) (Instance, error) {
	if err := spec.validate(s.cfg.Command); err != nil {
		return nil, err
	}
	if _, _, err := s.conn(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	relArtifact, relLog := relPaths(spec)
	artifact, workDir := "", base
	switch {
	case spec.Installed:
		// Installed by an earlier Start: a missing file shows as a start
		// that fails, with the shell's message in the log.
		artifact = spec.Artifact
		workDir = path.Dir(artifact)
	case spec.Artifact != "":
		artifact = path.Join(base, filepath.ToSlash(relArtifact))
		workDir = path.Dir(artifact)
		t := time.Now()
		n, err := s.upload(ctx, spec.Artifact, artifact, spec.ID)
		if err != nil {
			return nil, fmt.Errorf("upload %s to %s:%s: %w", spec.Artifact, s.label, artifact, err)
		}
		if spec.Progress != nil {
			spec.Progress(fmt.Sprintf("uploaded %s (%d bytes) to %s:%s in %s", filepath.Base(spec.Artifact), n, s.label, artifact, time.Since(t).Round(time.Millisecond)))
		}
	}
	logPath := path.Join(base, filepath.ToSlash(relLog))
	sh := script(s.cfg.Command, spec, artifact)

	var b strings.Builder
	b.WriteString("set -e\n")
	// The log is for the login user alone; the umask is the shell's own,
	// so the app keeps the one it would have had.
	fmt.Fprintf(&b, "mkdir -p %[1]s\nchmod 700 %[1]s\n(umask 077; : >>%[2]s)\nchmod 600 %[2]s\ncd %[3]s\n",
		shellQuote(path.Dir(logPath)), shellQuote(logPath), shellQuote(workDir))
	for _, kv := range append(instanceEnv(spec, artifact), s.cfg.Env...) {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "%s=%s; export %s\n", k, shellQuote(v), k)
	}
	fmt.Fprintf(&b, "printf '%%s\\n' %s >>%s\n", shellQuote(fmt.Sprintf("baton: %s starting %s %s on port %d: %s",
		time.Now().UTC().Format(time.RFC3339), spec.Color, spec.Version, spec.Port, sh)), shellQuote(logPath))
	// setsid: a session and process group of its own, no controlling
	// terminal, so the instance outlives this SSH session and a signal to
	// its group reaches everything it spawned. The inner shell reports its
	// PID on fd 3 (this session's stdout), closes it, and execs the command,
	// so the PID is the app's and the session ends at once.
	fmt.Fprintf(&b, "setsid sh -c %s 3>&1 >>%s 2>&1 </dev/null &\n",
		shellQuote("echo $$ >&3; exec 3>&-; "+sh), shellQuote(logPath))
	out, err := s.run(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("start on %s: %w", s.label, err)
	}
	fields := strings.Fields(out)
	pid := 0
	if len(fields) > 0 {
		pid, _ = strconv.Atoi(fields[len(fields)-1])
	}
	if pid <= 0 {
		inst := &sshInstance{s: s, rec: state.Instance{Log: logPath}}
		tail, _ := inst.LogTail(ctx, 10)
		return nil, fmt.Errorf("start on %s: no pid reported (output %q); log:\n%s", s.label, out, tail)
	}
	inst := &sshInstance{s: s, rec: state.Instance{
		AppVersion: spec.Version, PID: pid, Host: s.label, Artifact: artifact, Started: time.Now().UTC(),
		ID: spec.ID, Log: logPath, Launcher: "ssh",
	}, port: spec.Port}
	s.logger.Info("instance started", "host", s.label, "color", spec.Color, "version", spec.Version, "pid", pid, "log", logPath)
	return inst, nil
}

// upload copies local to remote over SFTP: into a temp file beside it, then
// a POSIX rename over remote, so that a running instance keeps the old file
// and a reader never sees half a file. A broken connection is retried once.
func (s *SSH) upload(ctx context.Context, local, remote, id string) (int64, error) {
	for attempt := 0; ; attempt++ {
		c, sc, err := s.conn(ctx)
		if err != nil {
			return 0, err
		}
		n, err := putFile(ctx, sc, local, remote, id)
		if err == nil || attempt == 1 || ctx.Err() != nil || !broken(c) {
			return n, err
		}
		s.logger.Warn("ssh connection broke during upload; retrying once", "host", s.label, "err", err)
		s.drop(c)
	}
}

func putFile(ctx context.Context, sc *sftp.Client, local, remote, id string) (n int64, err error) {
	in, err := os.Open(local)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	if err := sc.MkdirAll(path.Dir(remote)); err != nil {
		return 0, fmt.Errorf("mkdir %s: %w", path.Dir(remote), err)
	}
	// releases/ and releases/VERSION/ are for the login user alone, who
	// is the app's user (made by an older baton, they were 0755).
	for _, d := range []string{path.Dir(path.Dir(remote)), path.Dir(remote)} {
		if err := sc.Chmod(d, 0o700); err != nil {
			return 0, fmt.Errorf("chmod %s: %w", d, err)
		}
	}
	tmp := path.Join(path.Dir(remote), "."+path.Base(remote)+".tmp-"+id)
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			sc.Remove(tmp)
		}
	}()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if n, err = f.ReadFrom(in); err != nil {
		return n, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(0o700); err != nil {
		return n, fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = sc.PosixRename(tmp, remote); err != nil {
		return n, fmt.Errorf("rename %s to %s: %w", tmp, remote, err)
	}
	return n, nil
}

// Prune removes the releases on the host but the newest KeepReleases (by
// the time they were installed) and those holding an artifact of inUse,
// with the logs of the deploys of the removed versions: the same rule as
// Local.Prune. It returns what it removed, "" if nothing.
func (s *SSH) Prune(ctx context.Context, inUse []string) (string, error) {
	keepN := s.cfg.KeepReleases
	if keepN == 0 {
		keepN = DefaultKeepReleases
	}
	if keepN < 0 {
		return "", nil
	}
	if _, _, err := s.conn(ctx); err != nil {
		return "", err
	}
	s.mu.Lock()
	base := s.base
	s.mu.Unlock()
	// ls -t: newest first, by the time the directory last changed (an
	// install renames the artifact into it).
	out, err := s.run(ctx, fmt.Sprintf(`cd %s || exit 0
[ -d releases ] && ls -1t releases
echo ---
[ -d logs ] && ls -1 logs
exit 0
`, shellQuote(base)))
	if err != nil {
		return "", fmt.Errorf("list releases on %s: %w", s.label, err)
	}
	rels, logs, _ := strings.Cut(out, "---")
	kept, removed := pruneChoice(strings.Fields(rels), keepN, path.Join(base, "releases"), inUse, "/")
	if len(removed) == 0 {
		return "", nil
	}
	gone := pruneLogs(strings.Fields(logs), kept, removed)
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s\n", shellQuote(base))
	for _, v := range removed {
		fmt.Fprintf(&b, "rm -rf -- %s\n", shellQuote("releases/"+v))
	}
	for _, l := range gone {
		fmt.Fprintf(&b, "rm -f -- %s\n", shellQuote("logs/"+l))
	}
	if _, err := s.run(ctx, b.String()); err != nil {
		return "", fmt.Errorf("remove old releases on %s: %w", s.label, err)
	}
	return pruneSummary(removed, len(gone), kept) + " on " + s.label, nil
}

// CheckReachable resolves the host and opens a TCP connection to its SSH
// port, without logging in: at start-up it tells a typo in the target, or
// a host that is down, before the first deploy does.
func (s *SSH) CheckReachable(ctx context.Context) error {
	c, err := (&net.Dialer{Timeout: s.cfg.DialTimeout}).DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("ssh host %s: %w", s.addr, err)
	}
	return c.Close()
}

// Adopt returns a handle on an instance that an earlier baton process
// started on this launcher's host.
func (s *SSH) Adopt(rec state.Instance) (Instance, error) {
	if rec.Launcher != "ssh" || rec.Host != s.label {
		return nil, fmt.Errorf("%w: pid %d on %q (%s); this launcher is %s", ErrNotAdoptable, rec.PID, rec.Host, rec.Launcher, s)
	}
	if rec.PID <= 0 || rec.ID == "" {
		return nil, fmt.Errorf("%w: record has no pid or id", ErrNotAdoptable)
	}
	return &sshInstance{s: s, rec: rec, port: addrPort(rec.Addr)}, nil
}

// sshInstance is a process on the SSH launcher's host, known by its PID and
// checked by its BATON_INSTANCE marker before every signal.
type sshInstance struct {
	s    *SSH
	rec  state.Instance
	port int // the port it listens on; 0 if not known
}

func (i *sshInstance) Record() state.Instance { return i.rec }
func (i *sshInstance) String() string {
	return "pid " + strconv.Itoa(i.rec.PID) + " on " + i.s.label
}

// aliveFunc is a shell function: true while one of the PID's threads runs
// (the same rule as Alive: a zombie leader whose other threads still hold
// the sockets is alive) and still carries the instance's marker, so that a
// reused PID is never taken for the instance. The marker is read through a
// running thread: a zombie leader has no environment left. It also defines
// portfree, true once nothing listens on the instance's port.
func (i *sshInstance) aliveFunc() string {
	return fmt.Sprintf(`pid=%d
alive() {
	for t in /proc/$pid /proc/$pid/task/*; do
		st=$(cat $t/stat 2>/dev/null) || continue
		st=${st##*') '}
		case $st in Z*|X*) continue;; esac
		tr '\0' '\n' <$t/environ 2>/dev/null | grep -qxF %s && return 0
	done
	return 1
}
portfree() {
	[ %d -eq 0 ] && return 0
	! awk '$4 == "0A" && substr($2, length($2) - 4) == ":%04X" { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
`, i.rec.PID, shellQuote("BATON_INSTANCE="+i.rec.ID), i.port, i.port)
}

func (i *sshInstance) Alive(ctx context.Context) (bool, error) {
	_, err := i.s.run(ctx, i.aliveFunc()+"alive || exit 3\n")
	if err == nil {
		return true, nil
	}
	if st, ok := exitStatus(err); ok && st == 3 {
		return false, nil
	}
	return false, fmt.Errorf("check %s: %w", i, err)
}

// Wait polls the host until the instance is gone. The exit status of a
// detached process is not known over SSH.
func (i *sshInstance) Wait(ctx context.Context) error {
	t := time.NewTicker(sshPoll)
	defer t.Stop()
	for {
		alive, err := i.Alive(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			i.s.logger.Warn("cannot check instance; retrying", "instance", i.String(), "err", err)
		case !alive:
			return fmt.Errorf("%s exited (its exit status is not known over SSH; see its log)", i)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (i *sshInstance) Stop(ctx context.Context, sig syscall.Signal, grace time.Duration) (string, error) {
	name := strings.TrimPrefix(signalName(sig), "SIG")
	if strings.HasPrefix(name, "signal ") {
		name = strconv.Itoa(int(sig))
	}
	ticks := int(grace / (100 * time.Millisecond))
	// The whole stop runs on the host, in one round trip: signal the group
	// (or the process), wait up to grace, SIGKILL, wait up to 5s.
	sh := i.aliveFunc() + fmt.Sprintf(`alive || { echo gone; exit 0; }
kill -s %[1]s -- -$pid 2>/dev/null || kill -s %[1]s $pid 2>/dev/null || { echo gone; exit 0; }
n=0
while alive; do
	if [ $n -ge %[2]d ]; then
		kill -s KILL -- -$pid 2>/dev/null || kill -s KILL $pid 2>/dev/null || true
		m=0
		while alive; do
			[ $m -ge 50 ] && { echo stuck; exit 1; }
			sleep 0.1; m=$((m+1))
		done
		echo killed; exit 0
	fi
	sleep 0.1; n=$((n+1))
done
kill -s KILL -- -$pid 2>/dev/null || true
# The next instance needs the port: wait (5s at most) for whatever the
# app left behind to let go of it.
m=0
while ! portfree && [ $m -lt 50 ]; do sleep 0.1; m=$((m+1)); done
echo exited
`, name, ticks)
	t := time.Now()
	out, err := i.s.run(ctx, sh)
	switch strings.TrimSpace(out) {
	case "gone":
		return i.String() + " had already exited", nil
	case "exited":
		return fmt.Sprintf("%s exited %s after %s", i, time.Since(t).Round(time.Millisecond), signalName(sig)), nil
	case "killed":
		return fmt.Sprintf("%s ignored %s for %s; killed", i, signalName(sig), grace), nil
	case "stuck":
		return "", fmt.Errorf("%s still alive 5s after SIGKILL", i)
	}
	if err == nil {
		err = fmt.Errorf("unexpected output %q", out)
	}
	return "", fmt.Errorf("stop %s: %w", i, err)
}

func (i *sshInstance) LogTail(ctx context.Context, n int) (string, error) {
	out, err := i.s.run(ctx, fmt.Sprintf("tail -n %d %s", n, shellQuote(i.rec.Log)))
	if err != nil {
		return "", fmt.Errorf("read %s:%s: %w", i.s.label, i.rec.Log, err)
	}
	return lastLines([]byte(out), n), nil
}

var _ io.Closer = (*SSH)(nil)
