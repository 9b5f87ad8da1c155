package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	// Logger receives the launcher's own log lines; nil discards them.
	Logger *slog.Logger
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
		if err := installFile(spec.Artifact, artifact, spec.ID); err != nil {
			return nil, fmt.Errorf("install %s: %w", spec.Artifact, err)
		}
		workDir = filepath.Dir(artifact)
		if spec.Progress != nil {
			spec.Progress(fmt.Sprintf("installed %s as %s in %s", spec.Artifact, artifact, time.Since(t).Round(time.Millisecond)))
		}
	}
	logPath := filepath.Join(base, relLog)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer logf.Close() // the child has its own copy
	sh := script(l.Command, spec, artifact)
	fmt.Fprintf(logf, "baton: %s starting %s %s on port %d: %s\n", time.Now().UTC().Format(time.RFC3339), spec.Color, spec.Version, spec.Port, sh)

	cmd := exec.Command("/bin/sh", "-c", sh)
	cmd.Dir = workDir
	cmd.Env = append(append(inheritedEnv(), instanceEnv(spec, artifact)...), l.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A group of its own: a signal reaches the app and anything it spawned,
	// and a Ctrl-C meant for baton does not reach the app.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
// fsynced, made executable, renamed over dst. A running instance that has dst
// open keeps the old file. Copying src onto itself is a no-op.
func installFile(src, dst, id string) (err error) {
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
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-"+id)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(out, in); err != nil {
		return err
	}
	if err = out.Sync(); err != nil {
		return err
	}
	if err = out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
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
	if err != nil {
		return false
	}
	return bytes.Contains(append([]byte{0}, env...), []byte("\x00BATON_INSTANCE="+i.rec.ID+"\x00"))
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
