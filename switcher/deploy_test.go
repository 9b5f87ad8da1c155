package switcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/state"
)

// fakeProcess is an instance whose exit the test controls. The real
// launchers are covered by package launcher's tests with real processes.
type fakeProcess struct {
	rec    state.Instance
	exit   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	stops  int
	onStop func()
}

func newFakeProcess(pid int, version string) *fakeProcess {
	return &fakeProcess{rec: state.Instance{PID: pid, AppVersion: version, ID: fmt.Sprint("id-", pid), Log: "/logs/x.log", Launcher: "fake"},
		exit: make(chan struct{})}
}

func (p *fakeProcess) Record() state.Instance { return p.rec }
func (p *fakeProcess) String() string         { return fmt.Sprintf("pid %d", p.rec.PID) }
func (p *fakeProcess) die()                   { p.once.Do(func() { close(p.exit) }) }
func (p *fakeProcess) Wait(ctx context.Context) error {
	select {
	case <-p.exit:
		return errors.New("exit status 3")
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (p *fakeProcess) Stop(ctx context.Context, sig syscall.Signal, grace time.Duration) (string, error) {
	p.mu.Lock()
	p.stops++
	p.mu.Unlock()
	if p.onStop != nil {
		p.onStop()
	}
	p.die()
	return p.String() + " exited", nil
}
func (p *fakeProcess) Alive(context.Context) (bool, error) {
	select {
	case <-p.exit:
		return false, nil
	default:
		return true, nil
	}
}
func (p *fakeProcess) LogTail(ctx context.Context, n int) (string, error) {
	return "FATAL: the tail of the log", nil
}
func (p *fakeProcess) stopped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stops
}

// fakeLauncher hands out the processes that next returns; next may make a
// lazyApp serve, as a real instance would start listening.
type fakeLauncher struct {
	mu       sync.Mutex
	specs    []LaunchSpec
	next     func(spec LaunchSpec) (*fakeProcess, error)
	adopted  []state.Instance
	adoptErr error
}

func (l *fakeLauncher) Launch(ctx context.Context, spec LaunchSpec) (Process, error) {
	l.mu.Lock()
	l.specs = append(l.specs, spec)
	l.mu.Unlock()
	p, err := l.next(spec)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (l *fakeLauncher) Adopt(rec state.Instance) (Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.adopted = append(l.adopted, rec)
	if l.adoptErr != nil {
		return nil, l.adoptErr
	}
	return newFakeProcess(rec.PID, rec.AppVersion), nil
}

// lazyApp is an app address that starts serving only when the test says,
// as a launched instance would.
type lazyApp struct {
	addr string
	srv  *httptest.Server
}

func newLazyApp(t *testing.T) *lazyApp {
	t.Helper()
	return &lazyApp{addr: deadAddr(t)}
}

func (a *lazyApp) serve(t *testing.T, status int) {
	t.Helper()
	l, err := net.Listen("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	a.srv.Listener = l
	a.srv.Start()
	t.Cleanup(a.srv.Close)
}

func (a *lazyApp) stop() {
	if a.srv != nil {
		a.srv.Close()
	}
}

func TestDeployLaunchesSwitchesAndStopsTheOldInstance(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t)
	f := newFixture(t, blue.addr(), green.addr, Config{})
	started := newFakeProcess(200, "v2")
	l := &fakeLauncher{next: func(spec LaunchSpec) (*fakeProcess, error) {
		green.serve(t, 200)
		return started, nil
	}}
	f.sw.SetLauncher(l)
	old := newFakeProcess(100, "v1")
	f.sw.remember(Blue, old) // as if an earlier deploy had started v1

	var steps []string
	res, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2", Artifact: "/tmp/app.jar"}, func(e Event) { steps = append(steps, e.Step) })
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if got := l.specs[0]; got.Color != Green || got.Version != "v2" || got.Artifact != "/tmp/app.jar" || got.Port != portOf(green.addr) || got.ID != res.ID {
		t.Errorf("launch spec %+v", got)
	}
	if f.sw.Live() != Green || f.router.Live() != Green {
		t.Errorf("live %s; want green", f.sw.Live())
	}
	if old.stopped() != 1 || len(f.stopper.stopped()) != 0 {
		t.Errorf("old instance stopped %d times, by port %v; want once through its launcher", old.stopped(), f.stopper.stopped())
	}
	if got, want := strings.Join(steps, " "), "start launch health health swap persist drain stop"; got != want {
		t.Errorf("steps %q; want %q", got, want)
	}
	st, _ := f.store.Load()
	inst, ok := st.Instances["green"]
	if !ok || inst.PID != 200 || inst.AppVersion != "v2" || inst.Addr != green.addr {
		t.Errorf("saved green instance %+v; want pid 200 v2 at %s", inst, green.addr)
	}
	if _, ok := st.Instances["blue"]; ok {
		t.Errorf("the stopped blue instance is still in the state: %+v", st.Instances)
	}
	if h := st.History[len(st.History)-1]; h.Kind != "deploy" || h.Version != "v2" || !h.OK {
		t.Errorf("history entry %+v", h)
	}
}

func TestDeployFailsAtOnceWhenTheInstanceExits(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t)
	f := newFixture(t, blue.addr(), green.addr, Config{HealthDeadline: 30 * time.Second})
	p := newFakeProcess(300, "v2")
	f.sw.SetLauncher(&fakeLauncher{next: func(LaunchSpec) (*fakeProcess, error) {
		time.AfterFunc(50*time.Millisecond, p.die) // crashes during start-up
		return p, nil
	}})
	start := time.Now()
	res, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil)
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "blue keeps serving") {
		t.Fatalf("err = %v; want ErrExited with the status, blue keeps serving", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s; want the exit noticed at once, not at the 30s health deadline", took)
	}
	if res.LogTail != "FATAL: the tail of the log" {
		t.Errorf("log tail %q", res.LogTail)
	}
	if f.sw.Live() != Blue || f.router.Live() != Blue || len(f.stopper.stopped()) != 0 {
		t.Errorf("live %s, stopped %v; want blue untouched", f.sw.Live(), f.stopper.stopped())
	}
	st, _ := f.store.Load()
	if _, ok := st.Instances["green"]; ok || st.History[len(st.History)-1].OK {
		t.Errorf("state after a failed deploy: %+v", st)
	}
}

func TestDeployStopsAnInstanceThatNeverGetsHealthy(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t)
	f := newFixture(t, blue.addr(), green.addr, Config{HealthDeadline: 200 * time.Millisecond})
	p := newFakeProcess(400, "v2")
	f.sw.SetLauncher(&fakeLauncher{next: func(LaunchSpec) (*fakeProcess, error) {
		green.serve(t, 500)
		p.onStop = green.stop
		return p, nil
	}})
	_, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil)
	if !errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), "status 500") {
		t.Fatalf("err = %v; want ErrHealth naming status 500", err)
	}
	if p.stopped() != 1 {
		t.Errorf("the unhealthy instance was stopped %d times; want 1", p.stopped())
	}
	if f.sw.Live() != Blue {
		t.Errorf("live %s; want blue", f.sw.Live())
	}
}

func TestDeployRefusesWhatItCannotDo(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil); !errors.Is(err, ErrNoLauncher) || !errors.Is(err, ErrInvalid) {
		t.Errorf("deploy without a launcher: %v; want ErrNoLauncher", err)
	}
	l := &fakeLauncher{next: func(LaunchSpec) (*fakeProcess, error) { return nil, errors.New("must not launch") }}
	f.sw.SetLauncher(l)
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "1;rm -rf /"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("deploy of a bad version: %v; want ErrInvalid", err)
	}
	// Something baton did not start already listens on the idle colour: a
	// health check would pass against it, so the deploy must not go on.
	// The refusal names the process that holds the port (issue 13, item
	// 18) and is a conflict, not an "invalid request".
	f.stopper.owners = "pid 4242 (java)"
	_, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil)
	if err == nil || !strings.Contains(err.Error(), "already in use by pid 4242 (java), a process baton did not start") || len(l.specs) != 0 {
		t.Errorf("deploy onto a busy port: %v, %d launches; want a refusal naming pid 4242 before any launch", err, len(l.specs))
	}
	if !errors.Is(err, ErrPortInUse) || errors.Is(err, ErrInvalid) {
		t.Errorf("deploy onto a busy port: %v; want ErrPortInUse, not ErrInvalid", err)
	}

	// A deploy during another operation is refused with ErrBusy.
	if !f.sw.op.TryLock() {
		t.Fatal("lock held")
	}
	_, err = f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil)
	f.sw.op.Unlock()
	if !errors.Is(err, ErrBusy) {
		t.Errorf("deploy while busy: %v; want ErrBusy", err)
	}
}

func TestSetLauncherAdoptsRecordedInstances(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	store, _ := state.NewStore(t.TempDir())
	rec := state.Instance{PID: 42, AppVersion: "v7", ID: "x", Launcher: "fake", Addr: blue.addr()}
	if err := store.Save(state.State{Live: "blue", Instances: map[string]state.Instance{"blue": rec}}); err != nil {
		t.Fatal(err)
	}
	f := newFixtureWithStore(t, blue.addr(), green.addr(), Config{}, store)
	l := &fakeLauncher{}
	f.sw.SetLauncher(l)
	if len(l.adopted) != 1 || l.adopted[0].PID != 42 {
		t.Fatalf("adopted %+v; want the recorded blue instance", l.adopted)
	}
	// A switch now stops the adopted instance through the launcher, not
	// by port.
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.stopper.stopped()) != 0 {
		t.Errorf("stopped by port %v; want through the launcher", f.stopper.stopped())
	}
	if st, _ := f.store.Load(); len(st.Instances) != 0 {
		t.Errorf("instances after the stop: %+v", st.Instances)
	}
}

// pruningLauncher is a fakeLauncher that also prunes, as launcher.Local does.
type pruningLauncher struct {
	*fakeLauncher
	inUse [][]string
}

func (l *pruningLauncher) Prune(ctx context.Context, inUse []string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inUse = append(l.inUse, inUse)
	return "removed 1 old release(s) (v0)", nil
}

// TestDeployPrunesOldReleases is issue 13, item 9: after a deploy, the
// launcher removes old releases, told which ones are in use: the new live
// one and the previous one that a rollback would start again.
func TestDeployPrunesOldReleases(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t)
	f := newFixture(t, blue.addr(), green.addr, Config{})
	started := newFakeProcess(200, "v2")
	started.rec.Artifact = "/state/releases/v2/app.jar"
	l := &pruningLauncher{fakeLauncher: &fakeLauncher{next: func(spec LaunchSpec) (*fakeProcess, error) {
		green.serve(t, 200)
		return started, nil
	}}}
	f.sw.SetLauncher(l)
	old := newFakeProcess(100, "v1")
	old.rec.Artifact = "/state/releases/v1/app.jar"
	f.sw.remember(Blue, old)

	var msgs []string
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2", Artifact: "/tmp/app.jar"}, func(e Event) {
		msgs = append(msgs, e.Step+": "+e.Message)
	}); err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if len(l.inUse) != 1 {
		t.Fatalf("Prune called %d times; want once", len(l.inUse))
	}
	got := l.inUse[0]
	slices.Sort(got)
	if want := []string{"/state/releases/v1/app.jar", "/state/releases/v2/app.jar"}; !slices.Equal(got, want) {
		t.Errorf("Prune told %q are in use; want %q", got, want)
	}
	if !slices.Contains(msgs, "prune: removed 1 old release(s) (v0)") {
		t.Errorf("steps %q; want a prune step", msgs)
	}
}
