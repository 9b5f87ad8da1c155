package switcher

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/state"
)

// fakeRouter records routes and lets tests set in-flight counts. The real
// router (proxy.Handler) is covered by proxy's tests and the end-to-end test.
type fakeRouter struct {
	mu       sync.Mutex
	live     Color
	routes   []Color
	inFlight [2]atomic.Int64
	closed   []Color
	// endStreams, if set, answers EndStreams.
	endStreams func(c Color) int
}

func (r *fakeRouter) EndStreams(ctx context.Context, c Color) int {
	if r.endStreams == nil {
		return 0
	}
	return r.endStreams(c)
}

func (r *fakeRouter) Route(c Color) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = c
	r.routes = append(r.routes, c)
}
func (r *fakeRouter) InFlight(c Color) int64 { return r.inFlight[c].Load() }
func (r *fakeRouter) CloseIdle(c Color) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, c)
}
func (r *fakeRouter) Live() Color {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

type fakeStopper struct {
	mu    sync.Mutex
	addrs []string
	// routerInFlight, if set, is checked at stop time: a stop before the
	// drain finished would drop requests.
	check func()
	// owners is what Owners answers for any address.
	owners string
}

func (s *fakeStopper) Owners(addr string) string { return s.owners }

func (s *fakeStopper) Stop(ctx context.Context, addr string, grace time.Duration) (string, error) {
	if s.check != nil {
		s.check()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addrs = append(s.addrs, addr)
	return "stopped " + addr, nil
}

func (s *fakeStopper) stopped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.addrs...)
}

// healthApp is a real HTTP server whose /health status can be changed.
type healthApp struct {
	srv    *httptest.Server
	status atomic.Int32
}

func newHealthApp(t *testing.T, status int) *healthApp {
	t.Helper()
	a := &healthApp{}
	a.status.Store(int32(status))
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(a.status.Load()))
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *healthApp) addr() string { return a.srv.Listener.Addr().String() }

func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type fixture struct {
	sw      *Switcher
	router  *fakeRouter
	stopper *fakeStopper
	store   *state.Store
}

func newFixture(t *testing.T, blue, green string, cfg Config) *fixture {
	t.Helper()
	store, err := state.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWithStore(t, blue, green, cfg, store)
}

func newFixtureWithStore(t *testing.T, blue, green string, cfg Config, store *state.Store) *fixture {
	t.Helper()
	f := &fixture{router: &fakeRouter{}, stopper: &fakeStopper{}, store: store}
	cfg.Addrs = [2]string{blue, green}
	if cfg.HealthInterval == 0 {
		cfg.HealthInterval = 10 * time.Millisecond
	}
	sw, err := New(context.Background(), cfg, f.router, health.New("/health", time.Second), f.stopper, store, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.sw = sw
	return f
}

func TestSwitchHappyPath(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	if f.sw.Live() != Blue {
		t.Fatalf("initial live = %s; want blue", f.sw.Live())
	}
	var steps []string
	res, err := f.sw.Switch(context.Background(), SwitchRequest{}, func(e Event) { steps = append(steps, e.Step) })
	if err != nil {
		t.Fatalf("Switch: %v", err)
	}
	if res.From != Blue || res.To != Green {
		t.Errorf("result %s→%s; want blue→green", res.From, res.To)
	}
	if f.router.Live() != Green || f.sw.Live() != Green {
		t.Errorf("router live %s, switcher live %s; want green", f.router.Live(), f.sw.Live())
	}
	if got := f.stopper.stopped(); len(got) != 1 || got[0] != blue.addr() {
		t.Errorf("stopped %v; want [%s]", got, blue.addr())
	}
	want := "start health health swap persist drain stop"
	if got := strings.Join(steps, " "); got != want {
		t.Errorf("steps %q; want %q", got, want)
	}
	st, err := f.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != "green" || len(st.History) != 1 || !st.History[0].OK {
		t.Errorf("saved state %+v; want live green and one ok switch", st)
	}
}

func TestSwitchAbortsOnUnhealthyTarget(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 500)
	f := newFixture(t, blue.addr(), green.addr(), Config{HealthDeadline: 200 * time.Millisecond})
	_, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if !errors.Is(err, ErrHealth) {
		t.Fatalf("err = %v; want ErrHealth", err)
	}
	if !strings.Contains(err.Error(), "status 500") || !strings.Contains(err.Error(), "blue keeps serving") {
		t.Errorf("error %q should name the last status and that blue keeps serving", err)
	}
	if f.router.Live() != Blue || f.sw.Live() != Blue {
		t.Errorf("live = %s; want blue unchanged", f.router.Live())
	}
	if len(f.stopper.stopped()) != 0 {
		t.Errorf("stopped %v after a failed switch; want nothing stopped", f.stopper.stopped())
	}
	st, _ := f.store.Load()
	if st.Live != "blue" || len(st.History) != 1 || st.History[0].OK {
		t.Errorf("saved %+v; want live blue and one failed switch", st)
	}
}

func TestSwitchNeedsConsecutivePasses(t *testing.T) {
	blue := newHealthApp(t, 200)
	var n atomic.Int32
	// Health flaps ok, fail, ok, ok: the switch must wait for two in a row.
	flappy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 2 {
			w.WriteHeader(503)
		}
	}))
	defer flappy.Close()
	f := newFixture(t, blue.addr(), flappy.Listener.Addr().String(), Config{HealthPasses: 2})
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("health tries = %d; want 4 (ok, fail, ok, ok)", got)
	}
}

func TestSecondSwitchIsRefusedWhileOneRuns(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newHealthApp(t, 500) // keeps the first switch waiting
	f := newFixture(t, blue.addr(), green.addr(), Config{HealthDeadline: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := f.sw.Switch(ctx, SwitchRequest{}, func(e Event) {
			if e.Step == "start" {
				close(started)
			}
		})
		done <- err
	}()
	<-started
	_, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "switch to green") {
		t.Fatalf("second switch err = %v; want ErrBusy naming the running switch", err)
	}
	if f.sw.Status().Operation == nil {
		t.Error("status shows no running operation")
	}
	cancel() // the caller goes away before the swap: nothing changes
	if err := <-done; !errors.Is(err, ErrHealth) {
		t.Fatalf("cancelled switch err = %v; want ErrHealth", err)
	}
	if f.router.Live() != Blue {
		t.Errorf("live = %s after cancelled switch; want blue", f.router.Live())
	}
}

func TestSwitchToLiveColourIsRefused(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	to := Blue
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{To: &to}, nil); !errors.Is(err, ErrAlreadyLive) {
		t.Fatalf("err = %v; want ErrAlreadyLive", err)
	}
}

func TestStopWaitsForDrain(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	f.router.inFlight[Blue].Store(3)
	f.stopper.check = func() {
		if n := f.router.InFlight(Blue); n != 0 {
			t.Errorf("old app stopped with %d requests in flight", n)
		}
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		f.router.inFlight[Blue].Store(0)
	}()
	res, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Drained != 3 || res.Abandoned != 0 {
		t.Errorf("drained %d abandoned %d; want 3 and 0", res.Drained, res.Abandoned)
	}
	if len(f.router.closed) != 1 || f.router.closed[0] != Blue {
		t.Errorf("closed idle %v; want [blue]", f.router.closed)
	}
}

func TestDrainDeadlineReportsAbandoned(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{DrainTimeout: 50 * time.Millisecond})
	f.router.inFlight[Blue].Store(2)
	var msgs []string
	res, err := f.sw.Switch(context.Background(), SwitchRequest{}, func(e Event) { msgs = append(msgs, e.Message) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Abandoned != 2 {
		t.Errorf("abandoned %d; want 2", res.Abandoned)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "2 request(s) still in flight") {
		t.Errorf("events %q do not report the abandoned requests", msgs)
	}
}

// TestDrainDeadlineEndsStreamsBeforeStop (issue 13, item 21): when the
// drain deadline passes, the old colour's long-lived streams are ended
// before its app is signalled, and the drain step says how many.
func TestDrainDeadlineEndsStreamsBeforeStop(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{DrainTimeout: 50 * time.Millisecond})
	f.router.inFlight[Blue].Store(2)
	var endedOn []Color
	f.router.endStreams = func(c Color) int {
		if len(f.stopper.stopped()) > 0 {
			t.Error("streams ended after the old app was stopped")
		}
		endedOn = append(endedOn, c)
		f.router.inFlight[c].Store(0)
		return 2
	}
	f.stopper.check = func() {
		if len(endedOn) == 0 {
			t.Error("old app stopped before its streams were ended")
		}
	}
	var msgs []string
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, func(e Event) { msgs = append(msgs, e.Step+": "+e.Message) }); err != nil {
		t.Fatal(err)
	}
	if len(endedOn) != 1 || endedOn[0] != Blue {
		t.Errorf("streams ended on %v; want [blue]", endedOn)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "drain: drain deadline 50ms passed: ended 2 WebSocket or event stream(s) on blue") {
		t.Errorf("events %q do not report the ended streams", msgs)
	}
}

func TestNoStopLeavesOldApp(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{NoStop: true})
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	if len(f.stopper.stopped()) != 0 {
		t.Errorf("stopped %v with NoStop", f.stopper.stopped())
	}
}

func TestRestoresLiveColourFromState(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	store, _ := state.NewStore(t.TempDir())
	if err := store.Save(state.State{Live: "green"}); err != nil {
		t.Fatal(err)
	}
	f := newFixtureWithStore(t, blue.addr(), green.addr(), Config{}, store)
	if f.sw.Live() != Green || f.router.Live() != Green {
		t.Fatalf("live = %s; want green from the state file", f.sw.Live())
	}
}

func TestFirstStartPicksHealthyColour(t *testing.T) {
	green := newHealthApp(t, 200)
	f := newFixture(t, deadAddr(t), green.addr(), Config{})
	if f.sw.Live() != Green {
		t.Fatalf("live = %s; want green (blue is down)", f.sw.Live())
	}
	st, err := f.store.Load()
	if err != nil || st.Live != "green" {
		t.Fatalf("saved %+v, %v; want live green", st, err)
	}
}

func TestCorruptStateStopsStartup(t *testing.T) {
	dir := t.TempDir()
	store, _ := state.NewStore(dir)
	if err := os.WriteFile(store.Path(), []byte(`{"version":1,"live":`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Config{Addrs: [2]string{"127.0.0.1:1", "127.0.0.1:2"}},
		&fakeRouter{}, health.New("", 0), &fakeStopper{}, store, nil)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("New with a torn state file: err = %v; want a 'corrupt' error", err)
	}
}

func TestMonitorReportsHealth(t *testing.T) {
	blue := newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), deadAddr(t), Config{MonitorEvery: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.sw.Monitor(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st := f.sw.Status()
		if st.Upstreams[0].Health != nil && st.Upstreams[1].Health != nil {
			if !st.Upstreams[0].Health.Healthy || st.Upstreams[1].Health.Healthy {
				t.Fatalf("health blue=%+v green=%+v; want blue healthy, green down", st.Upstreams[0].Health, st.Upstreams[1].Health)
			}
			if st.Upstreams[1].Health.Error == "" {
				t.Error("green is down but carries no error")
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("monitor never reported both colours")
}

func TestExclusiveBlocksSwitchesAndHolds(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- f.sw.Exclusive("upgrade", nil, func(step func(string, string)) (bool, error) {
			step("start", "starting")
			close(inside)
			<-release
			return false, nil
		})
	}()
	<-inside
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("switch during upgrade: %v; want ErrBusy naming the upgrade", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Released: a switch works again. Then hold the lock for good.
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatalf("switch after upgrade: %v", err)
	}
	if err := f.sw.Exclusive("upgrade", nil, func(func(string, string)) (bool, error) { return true, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("switch after a held upgrade: %v; want ErrBusy", err)
	}
}

// TestHoldRefusesOperationsUntilReleased: a reload's Hold shows as the
// running operation and refuses switches, deploys and a second Hold with
// ErrBusy naming it; once released they run again.
func TestHoldRefusesOperationsUntilReleased(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	release, err := f.sw.Hold("reload")
	if err != nil {
		t.Fatal(err)
	}
	if op := f.sw.Status().Operation; op == nil || op.Kind != "reload" {
		t.Errorf("status during a hold: operation %+v; want the reload", op)
	}
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "reload") {
		t.Errorf("switch during a hold: %v; want ErrBusy naming the reload", err)
	}
	if _, err := f.sw.Hold("reload"); !errors.Is(err, ErrBusy) {
		t.Errorf("second hold: %v; want ErrBusy", err)
	}
	release()
	if op := f.sw.Status().Operation; op != nil {
		t.Errorf("status after release: operation %+v; want none", op)
	}
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Errorf("switch after release: %v", err)
	}
}

// Issue 13, item 18: a failed switch said "blue keeps serving" when no app
// answered on blue at all (the first deploy, or blue's app died). It says
// that only when blue answers its health check, else that nothing serves.
func TestFailedSwitchSaysWhetherTheOldColourServes(t *testing.T) {
	green := newHealthApp(t, 500)
	f := newFixture(t, deadAddr(t), green.addr(), Config{HealthDeadline: 200 * time.Millisecond})
	_, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil)
	if !errors.Is(err, ErrHealth) {
		t.Fatalf("err = %v; want ErrHealth", err)
	}
	if msg := err.Error(); strings.Contains(msg, "blue keeps serving") || !strings.Contains(msg, "no app answers on blue") ||
		!strings.Contains(msg, "connection refused") {
		t.Errorf("error %q; want it to say that no app answers on blue, and why", msg)
	}
	if f.sw.Live() != Blue {
		t.Errorf("live = %s; want blue unchanged", f.sw.Live())
	}
}
