package switcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/state"
)

// flakyStore is a state.Store whose saves fail, as on a full disk, once
// failFrom saves have been made (0: never fail).
type flakyStore struct {
	*state.Store
	saves    atomic.Int32
	failFrom atomic.Int32
}

var errNoSpace = fmt.Errorf("write state.json: %w", syscall.ENOSPC)

func (s *flakyStore) Save(st state.State) error {
	n := s.saves.Add(1)
	if f := s.failFrom.Load(); f > 0 && n >= f {
		return errNoSpace
	}
	return s.Store.Save(st)
}

func newFlakyFixture(t *testing.T, blue, green string, cfg Config) (*fixture, *flakyStore) {
	t.Helper()
	inner, err := state.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs := &flakyStore{Store: inner}
	f := &fixture{router: &fakeRouter{}, stopper: &fakeStopper{}, store: inner}
	cfg.Addrs = [2]string{blue, green}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 10 * time.Millisecond
	}
	sw, err := New(context.Background(), cfg, f.router, health.New("/health", time.Second), f.stopper, fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.sw = sw
	return f, fs
}

func TestFullDiskRefusesSwitchBeforeAnythingChanges(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f, fs := newFlakyFixture(t, blue.addr(), green.addr(), Config{})
	fs.failFrom.Store(1) // every save from now on fails
	fs.saves.Store(0)
	_, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if !errors.Is(err, ErrState) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("switch with a full disk: %v; want ErrState wrapping ENOSPC, nothing changed", err)
	}
	if f.router.Live() != Blue || len(f.stopper.stopped()) != 0 {
		t.Errorf("live %s, stopped %v; want blue untouched", f.router.Live(), f.stopper.stopped())
	}
	st := f.sw.Status()
	if !strings.Contains(st.StateError, "no space left on device") || st.Operation != nil {
		t.Errorf("status state_error %q operation %+v; want the save error and no operation", st.StateError, st.Operation)
	}

	// The disk fills up after the operation has recorded itself: traffic
	// moves, and the result says the new colour is not on disk.
	fs.failFrom.Store(2)
	fs.saves.Store(0)
	res, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	if f.router.Live() != Green || len(res.Warnings) != 2 || !strings.Contains(res.Warnings[0], "restart of baton would route to blue") {
		t.Errorf("live %s, warnings %q; want green and a warning that a restart would route to blue", f.router.Live(), res.Warnings)
	}

	// Space again: the next save clears the error.
	fs.failFrom.Store(0)
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if st := f.sw.Status(); st.StateError != "" {
		t.Errorf("state_error %q after a good save; want empty", st.StateError)
	}
}

func TestDeployRecordsPendingAndRestartReportsInterrupted(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t) // never serves: the deploy waits in its health checks
	dir := t.TempDir()
	store, _ := state.NewStore(dir)
	f := newFixtureWithStore(t, blue.addr(), green.addr, Config{HealthDeadline: 30 * time.Second}, store)
	p := newFakeProcess(500, "v2")
	f.sw.SetLauncher(&fakeLauncher{next: func(LaunchSpec) (*fakeProcess, error) { return p, nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.sw.Deploy(ctx, DeployRequest{Version: "v2"}, nil)
		done <- err
	}()
	// baton "dies" while the new instance is being health-checked: what is
	// on disk then is what a restart sees.
	var onDisk state.State
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := store.Load()
		if err == nil && st.Pending != nil && st.Pending.Instance != nil {
			onDisk = st
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the state never recorded the pending deploy with its instance: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done

	crashed, _ := state.NewStore(t.TempDir())
	if err := crashed.Save(onDisk); err != nil {
		t.Fatal(err)
	}
	f2 := newFixtureWithStore(t, blue.addr(), green.addr, Config{}, crashed)
	l := &fakeLauncher{}
	f2.sw.SetLauncher(l)
	st := f2.sw.Status()
	if st.Live != "blue" {
		t.Errorf("live after restart %s; want blue (the deploy never swapped)", st.Live)
	}
	last := st.History[len(st.History)-1]
	if !last.Interrupted || last.OK || last.Version != "v2" || !strings.Contains(last.Error, "before the swap") || !strings.Contains(last.Error, "pid 500") {
		t.Errorf("last history entry %+v; want the v2 deploy, interrupted before the swap, naming pid 500", last)
	}
	if len(l.adopted) != 1 || l.adopted[0].PID != 500 || l.adopted[0].Addr != green.addr {
		t.Errorf("adopted %+v; want the launched instance (pid 500) on green", l.adopted)
	}
	if saved, _ := crashed.Load(); saved.Pending != nil || !saved.History[len(saved.History)-1].Interrupted {
		t.Errorf("saved after restart: %+v; want no pending and the interrupted entry", saved)
	}
}

func TestRestartAfterSwapReportsWhereItStopped(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	store, _ := state.NewStore(t.TempDir())
	old := state.Instance{PID: 100, ID: "d1", AppVersion: "v1", Addr: blue.addr()}
	neu := state.Instance{PID: 200, ID: "d2", AppVersion: "v2", Addr: green.addr()}
	if err := store.Save(state.State{Live: "green",
		Instances: map[string]state.Instance{"blue": old, "green": neu},
		Pending:   &state.Deploy{ID: "d2", Kind: "deploy", Version: "v2", From: "blue", To: "green", Instance: &neu}}); err != nil {
		t.Fatal(err)
	}
	f := newFixtureWithStore(t, blue.addr(), green.addr(), Config{}, store)
	l := &fakeLauncher{}
	f.sw.SetLauncher(l)
	st := f.sw.Status()
	last := st.History[len(st.History)-1]
	if st.Live != "green" || !last.Interrupted || !strings.Contains(last.Error, "after the swap") || !strings.Contains(last.Error, "blue's instance is adopted") {
		t.Errorf("live %s, last %+v; want green and an interrupted entry after the swap", st.Live, last)
	}
	if len(l.adopted) != 2 {
		t.Errorf("adopted %+v; want both instances", l.adopted)
	}
}

// lazyColours gives a fixture two lazyApps and a launcher whose instances
// serve on their colour's address until stopped, recording each launch.
type lazyColours struct {
	apps     [2]*lazyApp
	launcher *fakeLauncher
	mu       sync.Mutex
	procs    []*fakeProcess
}

func newLazyColours(t *testing.T, cfg Config) (*fixture, *lazyColours) {
	t.Helper()
	lc := &lazyColours{apps: [2]*lazyApp{newLazyApp(t), newLazyApp(t)}}
	lc.apps[Blue].serve(t, 200) // v1, "deployed earlier"
	f := newFixture(t, lc.apps[Blue].addr, lc.apps[Green].addr, cfg)
	pid := 100
	lc.launcher = &fakeLauncher{next: func(spec LaunchSpec) (*fakeProcess, error) {
		lc.mu.Lock()
		defer lc.mu.Unlock()
		pid += 100
		p := newFakeProcess(pid, spec.Version)
		p.rec.Artifact = spec.Artifact
		app := lc.apps[spec.Color]
		app.serve(t, 200)
		p.onStop = app.stop
		lc.procs = append(lc.procs, p)
		return p, nil
	}}
	f.sw.SetLauncher(lc.launcher)
	v1 := newFakeProcess(100, "v1")
	v1.rec.Artifact = writeArtifact(t, "v1")
	v1.onStop = lc.apps[Blue].stop
	f.sw.remember(Blue, v1)
	return f, lc
}

func writeArtifact(t *testing.T, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "releases", v, "app")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("app "+v), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeploySwapsBackWhenTheNewInstanceDiesDuringTheDrain(t *testing.T) {
	f, lc := newLazyColours(t, Config{DrainTimeout: 10 * time.Second})
	f.router.inFlight[Blue].Store(1) // a slow request keeps the drain waiting
	var steps []string
	var mu sync.Mutex
	start := time.Now()
	res, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, func(e Event) {
		mu.Lock()
		steps = append(steps, e.Step)
		mu.Unlock()
		if e.Step == "persist" {
			lc.mu.Lock()
			p := lc.procs[len(lc.procs)-1]
			lc.mu.Unlock()
			p.die() // the new instance crashes right after the swap
		}
	})
	if !errors.Is(err, ErrExitedAfterSwap) || !strings.Contains(err.Error(), "blue still runs and serves again") {
		t.Fatalf("err = %v; want ErrExitedAfterSwap with blue serving again", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s; want the exit noticed during the drain, not at its 10s deadline", took)
	}
	if f.sw.Live() != Blue || f.router.Live() != Blue {
		t.Errorf("live %s (router %s); want blue again", f.sw.Live(), f.router.Live())
	}
	if old := f.sw.process(Blue); old == nil || old.(*fakeProcess).stopped() != 0 {
		t.Errorf("blue's instance %v was stopped or forgotten; it must keep serving", old)
	}
	if got := strings.Join(steps, " "); !strings.Contains(got, "swap persist drain swap_back log") || strings.Contains(got, "stop") {
		t.Errorf("steps %q; want ... swap persist drain swap_back log, and no stop", got)
	}
	if res.LogTail == "" {
		t.Error("no log tail for the instance that died")
	}
	st, _ := f.store.Load()
	if st.Live != "blue" || st.Previous != nil || st.Pending != nil || st.History[len(st.History)-1].OK {
		t.Errorf("saved %+v; want live blue, no previous, the failed deploy in the history", st)
	}
	if _, ok := st.Instances["green"]; ok {
		t.Errorf("the dead green instance is still recorded: %+v", st.Instances)
	}
}

func TestRollbackWithNothingToRollBackTo(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	_, err := f.sw.Rollback(context.Background(), nil)
	if !errors.Is(err, ErrNothingToRollBack) || !strings.Contains(err.Error(), "no earlier version is recorded") {
		t.Fatalf("rollback on a fresh baton: %v; want ErrNothingToRollBack", err)
	}
	if f.router.Live() != Blue || len(f.sw.Status().History) != 0 {
		t.Errorf("a refused rollback changed something: live %s, history %+v", f.router.Live(), f.sw.Status().History)
	}
}

func TestRollbackSwitchesBackToAKeptInstance(t *testing.T) {
	f, lc := newLazyColours(t, Config{NoStop: true})
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2"}, nil); err != nil {
		t.Fatal(err)
	}
	var steps []string
	res, err := f.sw.Rollback(context.Background(), func(e Event) { steps = append(steps, e.Step) })
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if f.sw.Live() != Blue || res.Version != "v1" || len(lc.launcher.specs) != 1 {
		t.Errorf("live %s, version %q, %d launches; want blue running v1 again without a launch", f.sw.Live(), res.Version, len(lc.launcher.specs))
	}
	if got := strings.Join(steps, " "); !strings.HasPrefix(got, "start plan health") {
		t.Errorf("steps %q; want start plan health ...", got)
	}
	h := f.sw.Status().History
	if last := h[len(h)-1]; last.Kind != "rollback" || !last.OK {
		t.Errorf("history %+v; want an ok rollback last", last)
	}
	// Rolling back again returns to v2, which also still runs.
	if res, err := f.sw.Rollback(context.Background(), nil); err != nil || f.sw.Live() != Green || res.Version != "v2" {
		t.Errorf("second rollback: %+v, %v; want green (v2) again", res, err)
	}
}

func TestRollbackRedeploysAStoppedVersion(t *testing.T) {
	f, lc := newLazyColours(t, Config{})
	v1Artifact := f.sw.process(Blue).Record().Artifact
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2", Artifact: writeArtifact(t, "v2")}, nil); err != nil {
		t.Fatal(err)
	}
	if f.sw.process(Blue) != nil {
		t.Fatal("v1 still recorded after the deploy stopped it")
	}
	prev := f.sw.Status().Previous
	if prev == nil || prev.Color != "blue" || prev.Instance == nil || prev.Instance.AppVersion != "v1" {
		t.Fatalf("previous %+v; want blue's v1", prev)
	}
	res, err := f.sw.Rollback(context.Background(), nil)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	spec := lc.launcher.specs[len(lc.launcher.specs)-1]
	if spec.Color != Blue || spec.Version != "v1" || spec.Artifact != v1Artifact || !spec.Installed {
		t.Errorf("relaunch spec %+v; want v1 on blue from its installed artifact %s", spec, v1Artifact)
	}
	if f.sw.Live() != Blue || res.Version != "v1" || res.Instance.PID == 0 {
		t.Errorf("live %s result %+v; want blue running a new v1 instance", f.sw.Live(), res)
	}
	// The v1 release is removed: now there is nothing to roll back to.
	if prev := f.sw.Status().Previous; prev == nil || prev.Instance.AppVersion != "v2" {
		t.Fatalf("previous after the rollback %+v; want v2", prev)
	}
	if err := os.Remove(f.sw.Status().Previous.Instance.Artifact); err != nil {
		t.Fatal(err)
	}
	_, err = f.sw.Rollback(context.Background(), nil)
	if !errors.Is(err, ErrNothingToRollBack) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("rollback to a removed release: %v; want ErrNothingToRollBack naming the missing file", err)
	}
}

func TestRollbackInSwitchMode(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{NoStop: true})
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	blue.status.Store(500) // blue is no longer fit
	_, err := f.sw.Rollback(context.Background(), nil)
	if !errors.Is(err, ErrNothingToRollBack) || !strings.Contains(err.Error(), "baton did not launch it") {
		t.Fatalf("rollback to an app that is down: %v; want ErrNothingToRollBack", err)
	}
	blue.status.Store(200)
	if _, err := f.sw.Rollback(context.Background(), nil); err != nil || f.sw.Live() != Blue {
		t.Fatalf("rollback to a healthy blue: %v, live %s", err, f.sw.Live())
	}
}

func TestRollbackIsRefusedWhileAnotherOperationRuns(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	if !f.sw.op.TryLock() {
		t.Fatal("lock held")
	}
	defer f.sw.op.Unlock()
	if _, err := f.sw.Rollback(context.Background(), nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("rollback while busy: %v; want ErrBusy", err)
	}
}
