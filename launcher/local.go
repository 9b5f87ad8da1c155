package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonproxy/baton/state"
)

// Local starts instances on this machine as children of baton. Create it as
// a struct literal; Command and Dir are required. It is safe for concurrent
// use.
type Local struct {
	// Command is the command template, e.g. "java -jar {artifact}
	// --server.port={port}"; see the package documentation.
	Command string
	// Dir is the base directory: artifacts are installed under Dir/releases
	// and logs written under Dir/logs.
	Dir string
	// Env holds extra KEY=VALUE variables for every instance. Instances
	// inherit baton's environment except its BATON_* variables (the admin
	// token among them).
	Env []string
	// User, if set, is the user and group the instances run as. The app's
	// group may then read its release and its log (and pass through Dir);
	// nobody else may. Nil runs them as baton's own user.
	User *RunAs
	// KeepReleases is how many of the newest releases Prune keeps besides
	// the ones in use; 0 means DefaultKeepReleases, negative keeps all.
	KeepReleases int
	// MaxLogBytes is the size at which RotateLogs cuts an app log; 0 means
	// DefaultMaxLogBytes, negative never cuts.
	MaxLogBytes int64
	// KeepLogs is how many cut-off parts of a log RotateLogs keeps; 0
	// means DefaultKeepLogs.
	KeepLogs int
	// Logger receives the launcher's own log lines; nil discards them.
	Logger *slog.Logger
}

// Who may read what Local writes: baton alone (0700, 0600), or with User
// set, the app's group too (0750, 0640), and the base directory lets that
// group through to releases/ and logs/ without listing it (0710).
func (l *Local) perm(mode os.FileMode) (os.FileMode, int) {
	if l.User == nil {
		return mode & 0o700, -1
	}
	return mode, int(l.User.GID)
}

// ensureDir creates dir if need be and gives it mode (narrowed by perm)
// and the app's group, whatever it had: a release directory made by an
// older baton was world-readable.
func (l *Local) ensureDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return l.restrict(dir, mode)
}

// restrict gives path mode (narrowed by perm) and the app's group.
func (l *Local) restrict(path string, mode os.FileMode) error {
	m, gid := l.perm(mode)
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			return fmt.Errorf("give %s to the app's group %d: %w", path, gid, err)
		}
	}
	return os.Chmod(path, m)
}

// String returns "local".
func (l *Local) String() string { return "local" }

// Start installs spec.Artifact into Dir/releases/VERSION/ and starts the
// command in a process group of its own, with its output appended to a log
// file under Dir/logs. The instance is baton's child: baton reaps it, so Wait
// returns as soon as it exits. The instance is not stopped when baton exits.
func (l *Local) Start(ctx context.Context, spec Spec) (Instance, error) {
	if err := CheckCommand(l.Command); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if err := spec.validate(l.Command); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base, err := filepath.Abs(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("launcher dir %q: %w", l.Dir, err)
	}
	relArtifact, relLog := relPaths(spec)
	artifact, workDir := "", base
	switch {
	case spec.Installed:
		artifact = spec.Artifact
		fi, err := os.Stat(artifact)
		if err != nil {
			return nil, fmt.Errorf("installed artifact: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("installed artifact %s is not a regular file", artifact)
		}
		workDir = filepath.Dir(artifact)
	case spec.Artifact != "":
		artifact = filepath.Join(base, relArtifact)
		t := time.Now()
		if err := l.ensureDir(filepath.Join(base, "releases"), 0o750); err != nil {
			return nil, fmt.Errorf("releases dir: %w", err)
		}
		if err := l.ensureDir(filepath.Dir(artifact), 0o750); err != nil {
			return nil, fmt.Errorf("release dir: %w", err)
		}
		if err := installFile(spec.Artifact, artifact, spec.ID, l.restrict); err != nil {
			return nil, fmt.Errorf("install %s: %w", spec.Artifact, err)
		}
		workDir = filepath.Dir(artifact)
		if spec.Progress != nil {
			spec.Progress(fmt.Sprintf("installed %s as %s in %s", spec.Artifact, artifact, time.Since(t).Round(time.Millisecond)))
		}
	}
	if l.User != nil {
		if err := l.restrict(base, 0o710); err != nil {
			return nil, fmt.Errorf("launcher dir: %w", err)
		}
	}
	logPath := filepath.Join(base, relLog)
	if err := l.ensureDir(filepath.Dir(logPath), 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	// baton opens the log and hands the app the descriptor: the app needs
	// no right to open it, only to write to what it was given.
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer logf.Close() // the child has its own copy
	if err := l.restrict(logPath, 0o640); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	sh := script(l.Command, spec, artifact)
	fmt.Fprintf(logf, "baton: %s starting %s %s on port %d: %s\n", time.Now().UTC().Format(time.RFC3339), spec.Color, spec.Version, spec.Port, sh)

	argv := append(dropCapsArgv(l.User), "/bin/sh", "-c", sh)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = workDir
	env := inheritedEnv()
	if l.User != nil {
		env = append(env, l.User.env()...)
	}
	cmd.Env = append(append(env, instanceEnv(spec, artifact)...), l.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A group of its own: a signal reaches the app and anything it spawned,
	// and a Ctrl-C meant for baton does not reach the app.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if l.User != nil {
		cmd.SysProcAttr.Credential = l.User.credential()
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", sh, err)
	}
	inst := &localInstance{
		rec: state.Instance{
			AppVersion: spec.Version, PID: cmd.Process.Pid, Artifact: artifact, Started: time.Now().UTC(),
			ID: spec.ID, Log: logPath, Launcher: "local",
		},
		port: spec.Port,
		done: make(chan struct{}),
	}
	go func() {
		err := cmd.Wait()
		inst.mu.Lock()
		inst.exitErr = err
		inst.mu.Unlock()
		close(inst.done)
	}()
	if l.Logger != nil {
		l.Logger.Info("instance started", "color", spec.Color, "version", spec.Version, "pid", cmd.Process.Pid, "log", logPath)
	}
	return inst, nil
}

// Adopt returns a handle on a local instance started by an earlier baton
// process. baton is no longer its parent: it watches it by polling /proc and
// signals it only while the PID still carries the instance's marker.
func (l *Local) Adopt(rec state.Instance) (Instance, error) {
	if rec.Host != "" || (rec.Launcher != "" && rec.Launcher != "local") {
		return nil, fmt.Errorf("%w: pid %d on %q (%s)", ErrNotAdoptable, rec.PID, rec.Host, rec.Launcher)
	}
	if rec.PID <= 0 || rec.ID == "" {
		return nil, fmt.Errorf("%w: record has no pid or id", ErrNotAdoptable)
	}
	return &localInstance{rec: rec, port: addrPort(rec.Addr)}, nil
}

// inheritedEnv is baton's environment without its own BATON_* variables,
// which hold secrets (the admin token) and settings of no use to the app.
func inheritedEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BATON_") {
			env = append(env, kv)
		}
	}
	return env
}

// installFile copies src to dst atomically: a temp file in dst's directory,
// fsynced, made executable (restrict gives it its mode and group), renamed
// over dst. A running instance that has dst open keeps the old file. Copying
// src onto itself is a no-op.
func installFile(src, dst, id string, restrict func(string, os.FileMode) error) (err error) {
	si, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !si.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	if di, err := os.Stat(dst); err == nil && os.SameFile(si, di) {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-"+id)
	if err := writeExecutable(tmp, in); err != nil {
		os.Remove(tmp)
		return err
	}
	if err = restrict(tmp, 0o750); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// writeExecutable writes the file path (created, 0700) from r and closes
// it, holding syscall.ForkLock for writing all along. Why: a process that
// baton forks meanwhile (another service's deploy starting its app) would
// inherit the open, writable descriptor until it execs (Go opens files
// close-on-exec, so only until then), and an exec of path in that window
// fails with ETXTBSY, "Text file busy" (golang/go#22315): two deploys on
// two services failed so in CI. Under the lock no fork happens while the
// descriptor is open, so no child ever holds it.
func writeExecutable(path string, r io.Reader) error {
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// localInstance is a process on this machine: baton's child (done != nil) or
// one adopted from the state file.
type localInstance struct {
	rec  state.Instance
	port int           // the port it listens on; 0 if not known
	done chan struct{} // closed once the child has been reaped; nil if adopted

	mu      sync.Mutex
	exitErr error
}

func (i *localInstance) Record() state.Instance { return i.rec }
func (i *localInstance) String() string         { return "pid " + strconv.Itoa(i.rec.PID) }

func (i *localInstance) exited() bool {
	if i.done == nil {
		return !i.ownedAlive()
	}
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

// ownedAlive reports whether the PID runs and still is this instance. The
// marker is read from a thread that runs: a zombie leader has no
// environment left to read while its other threads may still serve.
func (i *localInstance) ownedAlive() bool {
	if err := syscall.Kill(i.rec.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	task := liveTask(i.rec.PID)
	if task == "" {
		return false
	}
	env, err := os.ReadFile(filepath.Join(task, "environ"))
	if errors.Is(err, fs.ErrPermission) {
		// An app run as another user (--run-user) by a baton that is not
		// root: its environment is not baton's to read, but its start
		// time is. A reused PID would have to have started within the
		// same seconds as the instance.
		return i.startedAsRecorded()
	}
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte{0}, env...), []byte("\x00BATON_INSTANCE="+i.rec.ID+"\x00"))
}

// startedAsRecorded reports whether the PID's process started when the
// record says the instance did, give or take the precision of /proc.
func (i *localInstance) startedAsRecorded() bool {
	at, ok := startedAt(i.rec.PID)
	if !ok || i.rec.Started.IsZero() {
		return false
	}
	d := at.Sub(i.rec.Started)
	return d > -2*time.Second && d < 2*time.Second
}

func (i *localInstance) Alive(context.Context) (bool, error) { return !i.exited(), nil }

func (i *localInstance) Wait(ctx context.Context) error {
	if i.done != nil {
		select {
		case <-i.done:
			i.mu.Lock()
			defer i.mu.Unlock()
			return i.exitErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i.ownedAlive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return fmt.Errorf("%s exited (status unknown: baton did not start it in this run)", i)
}

// waitGone waits up to d for the instance to exit.
func (i *localInstance) waitGone(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	if i.done != nil {
		select {
		case <-i.done:
			return true
		case <-timer.C:
		case <-ctx.Done():
		}
		return false
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i.ownedAlive() {
		select {
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// signal sends sig to the instance's process group if it leads one (it does
// when baton started it), else to the process.
func (i *localInstance) signal(sig syscall.Signal) (group bool, err error) {
	pid := i.rec.PID
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		return true, syscall.Kill(-pid, sig)
	}
	return false, syscall.Kill(pid, sig)
}

func (i *localInstance) Stop(ctx context.Context, sig syscall.Signal, grace time.Duration) (string, error) {
	if i.exited() {
		return i.String() + " had already exited" + i.waitPort(ctx), nil
	}
	t := time.Now()
	group, err := i.signal(sig)
	if errors.Is(err, syscall.ESRCH) {
		return i.String() + " had already exited", nil
	}
	if err != nil {
		return "", fmt.Errorf("signal %s: %w", i, err)
	}
	if i.waitGone(ctx, grace) {
		if group {
			// Whatever the app spawned and left behind goes with it.
			_ = syscall.Kill(-i.rec.PID, syscall.SIGKILL)
		}
		return fmt.Sprintf("%s exited %s after %s", i, time.Since(t).Round(time.Millisecond), signalName(sig)) + i.waitPort(ctx), nil
	}
	if _, err := i.signal(syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return "", fmt.Errorf("kill %s: %w", i, err)
	}
	if !i.waitGone(context.WithoutCancel(ctx), 5*time.Second) {
		return "", fmt.Errorf("%s still alive 5s after SIGKILL", i)
	}
	return fmt.Sprintf("%s ignored %s for %s; killed", i, signalName(sig), grace) + i.waitPort(ctx), nil
}

// waitPort waits, bounded, until nothing listens on the instance's port any
// more: a child the app spawned may hold the socket a moment after the app
// itself has gone, and the next instance must find the port free. It
// returns "" once the port is free, else a note for Stop's description.
func (i *localInstance) waitPort(ctx context.Context) string {
	if waitPortFree(context.WithoutCancel(ctx), i.port, portFreeTimeout) {
		return ""
	}
	return fmt.Sprintf("; port %d still has a listener %s later", i.port, portFreeTimeout)
}

func (i *localInstance) LogTail(_ context.Context, n int) (string, error) {
	return readTail(i.rec.Log, n)
}
