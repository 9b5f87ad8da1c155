package switcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/state"
)

// Deploy errors a caller can act on (besides ErrBusy, ErrInvalid, ErrHealth).
var (
	// ErrNoLauncher: baton serve was started without a launcher (--run).
	ErrNoLauncher = errors.New("no launcher configured")
	// ErrLaunch: the new instance could not be started at all.
	ErrLaunch = errors.New("launch failed")
	// ErrExited: the new instance exited before it became healthy.
	ErrExited = errors.New("new instance exited during start-up")
	// ErrExitedAfterSwap: the new instance exited after the swap, before
	// the old one was stopped; the old one took the traffic back.
	ErrExitedAfterSwap = errors.New("new instance exited right after the swap")
)

// LogTailLines is how many lines of a failed instance's log a deploy reports.
const LogTailLines = 30

// Launcher starts app instances for a deploy. Package launcher has the local
// and SSH implementations; cmd/baton adapts them to this interface. A
// Launcher must be safe for concurrent use.
type Launcher interface {
	// Launch installs spec.Artifact where the instance runs and starts it,
	// listening on spec.Port. It returns once the process runs; it does not
	// wait for the app to be healthy.
	Launch(ctx context.Context, spec LaunchSpec) (Process, error)
	// Adopt returns a handle on an instance that an earlier baton process
	// launched, as recorded in the state. It does no I/O.
	Adopt(rec state.Instance) (Process, error)
}

// LaunchSpec is what a deploy asks a Launcher to start.
type LaunchSpec struct {
	ID       string // the deploy's ID; marks the process and names its log
	Color    Color
	Port     int
	Artifact string // a file on this machine; empty if the command needs none
	Version  string
	// Installed means Artifact is where an earlier launch installed the
	// artifact (a path on the instance's host, from its Record), not a
	// file on this machine to install: a rollback starts it from there.
	Installed bool
	// Progress, if set, is told of slow preparation steps (an upload).
	Progress func(msg string)
}

// Process is one running app instance that a Launcher started or adopted.
type Process interface {
	// Record describes the instance for the state file.
	Record() state.Instance
	// Wait blocks until the instance exits or ctx is done. It returns
	// ctx.Err() in the second case; otherwise nil for a clean exit and an
	// error describing the exit for any other.
	Wait(ctx context.Context) error
	// Stop sends sig to the instance (its process group), waits up to grace
	// for it to exit, then kills it. It returns what it did. An instance
	// that is already gone is not an error.
	Stop(ctx context.Context, sig syscall.Signal, grace time.Duration) (string, error)
	// LogTail returns up to the last n lines of the instance's output.
	LogTail(ctx context.Context, n int) (string, error)
	// Alive reports whether the instance still runs; an error means the
	// launcher could not tell.
	Alive(ctx context.Context) (bool, error)
	String() string
}

// Pruner is an optional interface of a Launcher: Prune removes old
// releases and their logs, keeping those of inUse (artifact paths as the
// instances' records give them) and a number of the newest. It returns
// what it removed, "" if nothing.
type Pruner interface {
	Prune(ctx context.Context, inUse []string) (string, error)
}

// prune lets l remove old releases after a deploy, keeping the live and
// the previous instances' ones. A failure is logged and reported as a
// step; it does not fail the deploy.
func (s *Switcher) prune(ctx context.Context, l Launcher, ev stepFunc) {
	p, ok := l.(Pruner)
	if !ok {
		return
	}
	var inUse []string
	s.mu.Lock()
	for _, inst := range s.st.Instances {
		if inst.Artifact != "" {
			inUse = append(inUse, inst.Artifact)
		}
	}
	if prev := s.st.Previous; prev != nil && prev.Instance != nil && prev.Instance.Artifact != "" {
		inUse = append(inUse, prev.Instance.Artifact)
	}
	s.mu.Unlock()
	t := time.Now()
	desc, err := p.Prune(ctx, inUse)
	if err != nil {
		s.logger.Warn("could not remove old releases", "err", err)
		desc = strings.TrimPrefix(desc+"; ", "; ") + "could not remove every old release: " + err.Error()
	}
	if desc != "" {
		ev("prune", desc, time.Since(t))
	}
}

// launchState is the Switcher's view of the instances baton launched. It is
// guarded by Switcher.mu.
type launchState struct {
	launcher Launcher
	procs    [2]Process
}

// SetLauncher lets the Switcher deploy: start new instances with l and stop
// them through it. It adopts the instances recorded in the state (launched
// by an earlier baton process), so that a later switch or deploy stops them
// by PID rather than by port; one that l cannot adopt is logged and left to
// the Stopper. Call it once, before serving.
func (s *Switcher) SetLauncher(l Launcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launch.launcher = l
	for _, c := range Colors {
		rec, ok := s.st.Instances[c.String()]
		if !ok || rec.PID == 0 {
			continue
		}
		p, err := l.Adopt(rec)
		if err != nil {
			s.logger.Warn("cannot adopt recorded instance; it will be stopped by port", "color", c, "pid", rec.PID, "host", rec.Host, "err", err)
			continue
		}
		s.launch.procs[c] = p
		s.logger.Info("adopted instance", "color", c, "instance", p.String(), "version", rec.AppVersion)
	}
}

// process returns the instance baton launched on c, nil if none.
func (s *Switcher) process(c Color) Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.launch.procs[c]
}

// forget drops what baton knows of c's instance once it has been stopped.
// The state is saved by the caller.
func (s *Switcher) forget(c Color) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launch.procs[c] = nil
	delete(s.st.Instances, c.String())
}

// remember records p as c's instance; the state is saved by the caller.
func (s *Switcher) remember(c Color, p Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launch.procs[c] = p
	if s.st.Instances == nil {
		s.st.Instances = map[string]state.Instance{}
	}
	rec := p.Record()
	rec.Addr = s.cfg.Addrs[c]
	s.st.Instances[c.String()] = rec
}

// DeployRequest asks for a deploy of one artifact.
type DeployRequest struct {
	// Version is the app version; it names the install directory, so it
	// may hold only letters, digits and . _ + - (at most 128).
	Version string
	// Artifact is a file on this machine that baton can read, or empty if
	// the launcher's command needs none.
	Artifact string
	// SHA256 is the artifact's checksum, for the record only.
	SHA256 string
	// Watch, if its Duration is set, keeps the old instance running for
	// that long after the swap and moves traffic back if the new one
	// fails (see settle in rollout.go).
	Watch Watch
}

// DeployResult describes a finished or failed deploy.
type DeployResult struct {
	Result
	Version string
	// Instance is the new instance (zero if it never started).
	Instance state.Instance
	// LogTail holds the last lines of the new instance's log when the deploy
	// failed after starting it.
	LogTail string
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// CheckVersion reports, as an ErrInvalid error, whether v cannot be a
// deploy's version.
func CheckVersion(v string) error {
	if !versionRE.MatchString(v) {
		return fmt.Errorf("%w: version %q: want 1-128 letters, digits or . _ + -, starting with a letter or digit", ErrInvalid, v)
	}
	return nil
}

// Deploy starts req's artifact on the idle colour and switches to it: stop
// whatever baton left on the idle colour → launch → health check (failing at
// once if the new instance exits) → swap → persist → drain → stop the old
// instance. On any failure before the swap the new instance is stopped, the
// live colour keeps serving, and the error carries the reason; the result
// carries the new instance's log tail. If the new instance exits after the
// swap but before the old one is stopped, traffic goes back to the old one
// and the deploy fails with ErrExitedAfterSwap. It shares Switch's lock: a
// deploy while another operation runs fails with ErrBusy.
func (s *Switcher) Deploy(ctx context.Context, req DeployRequest, emit func(Event)) (DeployResult, error) {
	s.mu.Lock()
	l := s.launch.launcher
	s.mu.Unlock()
	if l == nil {
		return DeployResult{}, fmt.Errorf("%w: %w: start baton serve with --run (and --ssh for a remote host)", ErrInvalid, ErrNoLauncher)
	}
	if err := CheckVersion(req.Version); err != nil {
		return DeployResult{}, err
	}
	release, err := s.acquire()
	if err != nil {
		return DeployResult{}, err
	}
	defer release()
	return s.runDeploy(ctx, "deploy", l, req, false, emit)
}

// runDeploy is Deploy once the operation lock is held. installed says that
// req.Artifact is already installed where the instance runs (a rollback).
func (s *Switcher) runDeploy(ctx context.Context, kind string, l Launcher, req DeployRequest, installed bool, emit func(Event)) (DeployResult, error) {
	from := s.Live()
	to := from.Other()
	res := DeployResult{Result: Result{ID: newID(), From: from, To: to}, Version: req.Version}
	ev, done, err := s.startOp(kind, req.Version, &res.Result, "", emit)
	if err != nil {
		return res, err
	}
	fail := func(err error) (DeployResult, error) {
		s.cfg.Observer.DeployDone(res.Result, done(err))
		return res, err
	}
	proc, err := s.launchIdle(ctx, kind, l, req, installed, &res, ev)
	if err != nil {
		return fail(err)
	}

	// Healthy: record the instance so that the persist step saves it with
	// the new live colour. From here on the deploy completes even if the
	// caller goes away.
	ctx = context.WithoutCancel(ctx)
	s.remember(to, proc)
	s.mu.Lock()
	previous := s.st.Previous
	s.mu.Unlock()
	exit := watchExit(proc)
	defer exit.stop()
	swapped := time.Now()
	if s.handOver(ctx, &res.Result, ev, exit.done) {
		return fail(s.swapBack(ctx, kind, &res, previous, proc, exit.err, time.Since(swapped), ev))
	}
	if res.Stopped, err = s.settle(ctx, kind, req.Version, &res.Result, req.Watch, nil, exit, ev); err != nil {
		return fail(err)
	}
	s.prune(ctx, l, ev)
	s.cfg.Observer.DeployDone(res.Result, done(nil))
	return res, nil
}

// markLaunched adds the new instance to the pending operation in the state,
// so that a baton killed before the deploy ends adopts it when restarted. A
// failed save is in Status; the deploy goes on.
func (s *Switcher) markLaunched(rec state.Instance) {
	s.mu.Lock()
	if s.st.Pending != nil {
		s.st.Pending.Instance = &rec
	}
	s.mu.Unlock()
	_ = s.save()
}

// logTail returns the last lines of proc's log and emits them as a log step.
func (s *Switcher) logTail(ctx context.Context, proc Process, path string, ev stepFunc) string {
	tail, err := proc.LogTail(ctx, LogTailLines)
	if err != nil {
		tail = "(could not read the log: " + err.Error() + ")"
	}
	ev("log", fmt.Sprintf("last lines of %s:\n%s", path, tail), 0)
	return tail
}

// exitWatch tells when a process exits.
type exitWatch struct {
	done chan struct{} // closed when the process has exited
	err  error         // how it exited; read after done is closed
	stop context.CancelFunc
}

func watchExit(p Process) *exitWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &exitWatch{done: make(chan struct{}), stop: cancel}
	go func() {
		err := p.Wait(ctx)
		if ctx.Err() == nil {
			w.err = err
			close(w.done)
		}
	}()
	return w
}

// swapBack routes traffic back to res.From after the new instance on
// res.To died in the middle of the handover, before res.From was stopped:
// the old instance still runs and serves again. It restores what
// 'baton rollback' would go back to, and returns the deploy's error.
func (s *Switcher) swapBack(ctx context.Context, kind string, res *DeployResult, previous *state.Previous, proc Process, werr error, after time.Duration, ev stepFunc) error {
	from, to := res.From, res.To
	if werr == nil {
		werr = errors.New("exit status 0")
	}
	t := time.Now()
	s.router.Route(from)
	s.mu.Lock()
	s.live = from
	s.st.Live = from.String()
	s.st.Previous = previous
	s.launch.procs[to] = nil
	delete(s.st.Instances, to.String())
	s.mu.Unlock()
	s.cfg.Observer.Live(from, s.appVersion(from))
	ev("swap_back", fmt.Sprintf("the new %s instance (%s) exited %s after the swap (%v); %s is live again", to, proc, after.Round(time.Millisecond), werr, from), time.Since(t))
	if err := s.save(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("could not save the state after swapping back (%v): a restart of baton would route to %s", err, to))
	}
	s.router.CloseIdle(to)
	res.LogTail = s.logTail(ctx, proc, res.Instance.Log, ev)
	return fmt.Errorf("%s %s to %s: %w (%v); %s still runs and serves again (log: %s)", kind, res.Version, to, ErrExitedAfterSwap, werr, from, res.Instance.Log)
}

// clearIdle makes sure nothing serves on the idle colour c before a launch:
// it stops the instance baton left there (after --no-stop or a failed stop),
// then refuses to go on if anything still accepts connections on c's
// address, because a health check would then pass against that process
// instead of the new one.
func (s *Switcher) clearIdle(ctx context.Context, c Color, ev stepFunc) error {
	if p := s.process(c); p != nil {
		t := time.Now()
		desc, err := p.Stop(ctx, syscall.SIGTERM, s.cfg.StopTimeout)
		if err != nil {
			return fmt.Errorf("stop the previous instance on %s (%s): %w", c, p, err)
		}
		s.forget(c)
		ev("prepare", fmt.Sprintf("stopped the previous %s instance: %s", c, desc), time.Since(t))
	}
	addr := s.cfg.Addrs[c]
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
	if err == nil {
		conn.Close()
		who := "a process"
		if po, ok := s.stopper.(PortOwners); ok {
			if o := po.Owners(addr); o != "" {
				who = o + ", a process"
			}
		}
		return fmt.Errorf("%w: %s (%s) is already in use by %s baton did not start; stop it, or use 'baton switch' to move traffic to it", ErrPortInUse, c, addr, who)
	}
	return nil
}

// waitStarted waits until c passes its health checks, failing at once if
// proc exits first.
func (s *Switcher) waitStarted(ctx context.Context, c Color, proc Process, ev stepFunc) error {
	hctx, cancel := context.WithCancel(ctx)
	exited := make(chan error, 1)
	go func() {
		err := proc.Wait(hctx)
		if hctx.Err() == nil {
			cancel() // stops the health checks at once
		}
		exited <- err
	}()
	herr := s.waitHealthy(hctx, c, ev)
	cancel()
	werr := <-exited
	if !errors.Is(werr, context.Canceled) && !errors.Is(werr, context.DeadlineExceeded) {
		// The process is gone, whether or not the health checks passed
		// just before: an exited app serves nothing.
		if werr == nil {
			return fmt.Errorf("%w (exit status 0)", ErrExited)
		}
		return fmt.Errorf("%w (%v)", ErrExited, werr)
	}
	return herr
}

func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
