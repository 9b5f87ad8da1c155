package switcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/state"
)

// splitRouter is a fakeRouter that can split, recording what it was told.
type splitRouter struct {
	*fakeRouter
	smu     sync.Mutex
	percent int // -1: no split
	canary  Color
	seeds   map[string]bool
	calls   []string
}

func (r *splitRouter) Split(c Color, p int, rules SplitRules, seed string) error {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.percent, r.canary = p, c
	r.seeds[seed] = true
	r.calls = append(r.calls, fmt.Sprintf("split %s %d", c, p))
	return nil
}

func (r *splitRouter) Unsplit() {
	r.smu.Lock()
	defer r.smu.Unlock()
	r.percent = -1
	r.calls = append(r.calls, "unsplit")
}

func (r *splitRouter) share() int {
	r.smu.Lock()
	defer r.smu.Unlock()
	return r.percent
}

// rolloutObs records the RolloutObserver calls.
type rolloutObs struct {
	nopObserver
	mu        sync.Mutex
	percents  []int
	rollbacks []string
	results   []string
}

func (o *rolloutObs) CanaryPercent(c Color, p int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.percents = append(o.percents, p)
}
func (o *rolloutObs) Rollback(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rollbacks = append(o.rollbacks, reason)
}
func (o *rolloutObs) RolloutDone(result string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.results = append(o.results, result)
}
func (o *rolloutObs) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("percents %v rollbacks %v results %v", o.percents, o.rollbacks, o.results)
}

type rolloutFixture struct {
	sw      *Switcher
	router  *splitRouter
	stopper *fakeStopper
	tally   *Tally
	obs     *rolloutObs
	old     *fakeProcess // v1 on blue
	started *fakeProcess // the canary on green
	green   *lazyApp
}

// newRolloutFixture: blue live with v1 (launched by baton), green idle;
// launching starts a fake v2 that serves on green.
func newRolloutFixture(t *testing.T) *rolloutFixture {
	t.Helper()
	blue := newHealthApp(t, 200)
	f := &rolloutFixture{
		router:  &splitRouter{fakeRouter: &fakeRouter{}, percent: -1, seeds: map[string]bool{}},
		stopper: &fakeStopper{}, tally: &Tally{}, obs: &rolloutObs{},
		old: newFakeProcess(100, "v1"), started: newFakeProcess(200, "v2"), green: newLazyApp(t),
	}
	store, err := state.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Addrs: [2]string{blue.addr(), f.green.addr}, HealthInterval: 10 * time.Millisecond, Observer: f.obs}
	f.sw, err = New(context.Background(), cfg, f.router, health.New("/health", time.Second), f.stopper, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.sw.ro.every = 10 * time.Millisecond
	f.sw.SetTally(f.tally)
	f.sw.SetLauncher(&fakeLauncher{next: func(LaunchSpec) (*fakeProcess, error) {
		f.green.serve(t, 200)
		return f.started, nil
	}})
	f.sw.remember(Blue, f.old)
	return f
}

// start runs a rollout in the background; wait gets its outcome.
func (f *rolloutFixture) start(t *testing.T, req RolloutRequest) (wait func() (DeployResult, []Event, error)) {
	t.Helper()
	type out struct {
		res DeployResult
		err error
	}
	var (
		mu     sync.Mutex
		events []Event
	)
	done := make(chan out, 1)
	go func() {
		res, err := f.sw.Rollout(context.Background(), req, func(e Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
		done <- out{res, err}
	}()
	return func() (DeployResult, []Event, error) {
		t.Helper()
		select {
		case o := <-done:
			mu.Lock()
			defer mu.Unlock()
			return o.res, append([]Event(nil), events...), o.err
		case <-time.After(10 * time.Second):
			t.Fatal("the rollout did not end")
			return DeployResult{}, nil, nil
		}
	}
}

// waitRollout waits until status shows a rollout in phase.
func (f *rolloutFixture) waitRollout(t *testing.T, phase string) RolloutStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r := f.sw.Status().Rollout; r != nil && r.Phase == phase {
			return *r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rollout in phase %s; status %+v", phase, f.sw.Status())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// feed records answers on the tally until stop is closed.
func (f *rolloutFixture) feed(c Color, status int, d time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			for range 20 {
				f.tally.Record(c, status, d)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return func() { close(done); wg.Wait() }
}

func eventText(events []Event) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "%s: %s\n", e.Step, e.Message)
	}
	return b.String()
}

func TestRolloutStepsOnScheduleAndPromotes(t *testing.T) {
	f := newRolloutFixture(t)
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10, 50, 100}, StepInterval: 50 * time.Millisecond,
		Rules: SplitRules{StickyCookie: DefaultStickyCookie}})
	st := f.waitRollout(t, "canary")
	if st.Old != "blue" || st.New != "green" || st.Version != "v2" || !strings.Contains(st.Sticky, DefaultStickyCookie) {
		t.Errorf("status %+v", st)
	}
	res, events, err := wait()
	if err != nil {
		t.Fatalf("Rollout: %v\n%s", err, eventText(events))
	}
	text := eventText(events)
	for _, want := range []string{"10% of requests to green", "50% of requests to green (v2) (step 2 of 3)", "promoting", "swap", "drain", "stop"} {
		if !strings.Contains(text, want) {
			t.Errorf("events lack %q:\n%s", want, text)
		}
	}
	if f.sw.Live() != Green || f.router.Live() != Green || f.router.share() != -1 {
		t.Errorf("live %s, router %s, share %d; want green, unsplit", f.sw.Live(), f.router.Live(), f.router.share())
	}
	if f.old.stopped() != 1 || f.started.stopped() != 0 {
		t.Errorf("v1 stopped %d times, v2 %d; want v1 once", f.old.stopped(), f.started.stopped())
	}
	if len(f.router.seeds) != 1 || !f.router.seeds[res.ID] {
		t.Errorf("split seeds %v; want one, the rollout's ID", f.router.seeds)
	}
	if f.sw.Status().Rollout != nil {
		t.Error("status still shows a rollout")
	}
	h := f.sw.Status().History
	if last := h[len(h)-1]; last.Kind != "rollout" || !last.OK || last.Version != "v2" {
		t.Errorf("history %+v", last)
	}
	if got := f.obs.String(); got != "percents [10 50 0] rollbacks [] results [promoted]" {
		t.Errorf("observer: %s", got)
	}
	if f.tally.Armed() {
		t.Error("the tally is still armed")
	}
}

func TestRolloutSteeredByCommand(t *testing.T) {
	f := newRolloutFixture(t)
	if _, err := f.sw.Steer(RolloutCommand{Action: "abort"}); !errors.Is(err, ErrNoRollout) {
		t.Fatalf("Steer without a rollout: %v; want ErrNoRollout", err)
	}
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}})
	f.waitRollout(t, "canary")

	st, err := f.sw.Steer(RolloutCommand{Action: "percent", Percent: 40})
	if err != nil || st.Percent != 40 || f.router.share() != 40 {
		t.Fatalf("percent 40: %+v, %v; router %d", st, err, f.router.share())
	}
	if _, err := f.sw.Steer(RolloutCommand{Action: "percent", Percent: 140}); !errors.Is(err, ErrInvalid) {
		t.Errorf("percent 140: %v; want ErrInvalid", err)
	}
	// Nothing else may run meanwhile.
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "rollout to green") {
		t.Errorf("Switch during a rollout: %v; want ErrBusy naming the rollout", err)
	}
	if _, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v3"}, nil); !errors.Is(err, ErrBusy) {
		t.Errorf("Deploy during a rollout: %v; want ErrBusy", err)
	}

	if _, err := f.sw.Steer(RolloutCommand{Action: "abort"}); err != nil {
		t.Fatal(err)
	}
	_, events, err := wait()
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "blue keeps serving") {
		t.Fatalf("err = %v; want ErrAborted, blue keeps serving\n%s", err, eventText(events))
	}
	if f.sw.Live() != Blue || f.router.Live() != Blue || f.router.share() != -1 {
		t.Errorf("after abort live %s, share %d; want blue, unsplit", f.sw.Live(), f.router.share())
	}
	if f.started.stopped() != 1 || f.old.stopped() != 0 {
		t.Errorf("v2 stopped %d times, v1 %d; want v2 once", f.started.stopped(), f.old.stopped())
	}
	if got := f.obs.String(); got != "percents [10 40 0] rollbacks [command] results [aborted]" {
		t.Errorf("observer: %s", got)
	}
	st2, _ := f.store(t)
	if _, ok := st2.Instances["green"]; ok {
		t.Errorf("the stopped canary is still in the state: %+v", st2.Instances)
	}
}

func (f *rolloutFixture) store(t *testing.T) (state.State, error) {
	t.Helper()
	return f.sw.store.Load()
}

func TestRolloutRollsBackOnErrors(t *testing.T) {
	f := newRolloutFixture(t)
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{20},
		Watch: Watch{Thresholds: Thresholds{MinRequests: 50}}})
	f.waitRollout(t, "canary")
	stopBlue := f.feed(Blue, 200, 3*time.Millisecond)
	defer stopBlue()
	stopGreen := f.feed(Green, 500, 3*time.Millisecond)
	defer stopGreen()
	_, events, err := wait()
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "5xx") {
		t.Fatalf("err = %v; want ErrRolledBack on the error rate\n%s", err, eventText(events))
	}
	if f.sw.Live() != Blue || f.router.share() != -1 || f.started.stopped() != 1 {
		t.Errorf("live %s share %d v2 stops %d; want blue, unsplit, v2 stopped", f.sw.Live(), f.router.share(), f.started.stopped())
	}
	if got := f.obs.String(); !strings.Contains(got, "rollbacks [error_rate] results [rolled_back]") {
		t.Errorf("observer: %s", got)
	}
}

func TestRolloutRollsBackOnLatency(t *testing.T) {
	f := newRolloutFixture(t)
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{20},
		Watch: Watch{Thresholds: Thresholds{MinRequests: 50}}})
	f.waitRollout(t, "canary")
	defer f.feed(Blue, 200, 20*time.Millisecond)()
	defer f.feed(Green, 200, 900*time.Millisecond)()
	_, _, err := wait()
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "p99") {
		t.Fatalf("err = %v; want ErrRolledBack on latency", err)
	}
}

func TestRolloutKeepsAHealthyCanary(t *testing.T) {
	f := newRolloutFixture(t)
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{30},
		Watch: Watch{Thresholds: Thresholds{MinRequests: 50}}})
	f.waitRollout(t, "canary")
	stopBlue := f.feed(Blue, 200, 10*time.Millisecond)
	stopGreen := f.feed(Green, 200, 12*time.Millisecond)
	// Many judge rounds (every 10ms) with plenty of answers.
	time.Sleep(400 * time.Millisecond)
	st := f.sw.Status().Rollout
	if st == nil || st.Judge == nil || st.Judge.Verdict != "ok" || st.Judge.New.Responses < 50 {
		t.Fatalf("rollout status %+v; want a judge that says ok", st)
	}
	if _, err := f.sw.Steer(RolloutCommand{Action: "promote"}); err != nil {
		t.Fatal(err)
	}
	_, events, err := wait()
	stopBlue()
	stopGreen()
	if err != nil {
		t.Fatalf("a healthy canary ended with %v\n%s", err, eventText(events))
	}
	if f.sw.Live() != Green {
		t.Errorf("live %s; want green", f.sw.Live())
	}
}

func TestRolloutRollsBackWhenTheCanaryExits(t *testing.T) {
	f := newRolloutFixture(t)
	wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}})
	f.waitRollout(t, "canary")
	f.started.die()
	res, _, err := wait()
	if !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("err = %v; want ErrRolledBack, exited", err)
	}
	if res.LogTail == "" || f.sw.Live() != Blue {
		t.Errorf("log tail %q, live %s", res.LogTail, f.sw.Live())
	}
}

func TestRolloutRefusesBadRequests(t *testing.T) {
	f := newRolloutFixture(t)
	for _, req := range []RolloutRequest{
		{DeployRequest: DeployRequest{Version: "v2"}},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{50, 20}, StepInterval: time.Second},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10, 20}},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{100}},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}, Rules: SplitRules{StickyCookie: "a", StickyHeader: "b"}},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}, Rules: SplitRules{AllowHeader: "X-Canary"}},
		{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}, Watch: Watch{Thresholds: Thresholds{MaxErrorRate: 2}}},
	} {
		if _, err := f.sw.Rollout(context.Background(), req, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("Rollout(%+v) = %v; want ErrInvalid", req, err)
		}
	}
	// A router that cannot split refuses rollouts.
	plain := newFixture(t, newHealthApp(t, 200).addr(), newLazyApp(t).addr, Config{})
	plain.sw.SetLauncher(&fakeLauncher{})
	if _, err := plain.sw.Rollout(context.Background(), RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10}}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Rollout without a Splitter: %v; want ErrInvalid", err)
	}
}

func TestWatchAfterSwitchRollsBack(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	f.sw.ro.every = 10 * time.Millisecond
	tally := &Tally{}
	f.sw.SetTally(tally)
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := f.sw.Switch(context.Background(), SwitchRequest{Watch: Watch{Duration: 10 * time.Second, Thresholds: Thresholds{MinRequests: 30}}}, nil)
		done <- out{res, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r := f.sw.Status().Rollout; r == nil || r.Phase != "watch"; r = f.sw.Status().Rollout {
		if time.Now().After(deadline) {
			t.Fatal("no watch in status")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if f.sw.Live() != Green || len(f.stopper.stopped()) != 0 {
		t.Fatalf("during the watch: live %s, stopped %v; want green live and blue still running", f.sw.Live(), f.stopper.stopped())
	}
	for range 100 {
		tally.Record(Green, 503, time.Millisecond)
	}
	var o out
	select {
	case o = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not roll back")
	}
	if !errors.Is(o.err, ErrRolledBack) || !strings.Contains(o.err.Error(), "blue is live again") {
		t.Fatalf("err = %v; want ErrRolledBack, blue is live again", o.err)
	}
	if f.sw.Live() != Blue || f.router.Live() != Blue {
		t.Errorf("live %s; want blue", f.sw.Live())
	}
	if got := f.stopper.stopped(); len(got) != 1 || got[0] != green.addr() {
		t.Errorf("stopped %v; want only green (the new one)", got)
	}
	if h := f.sw.Status().History; h[len(h)-1].OK {
		t.Errorf("history %+v; want the switch recorded as failed", h[len(h)-1])
	}
}

func TestWatchAfterSwitchKeepsOldUntilTheEnd(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	f := newFixture(t, blue.addr(), green.addr(), Config{})
	f.sw.ro.every = 10 * time.Millisecond
	start := time.Now()
	res, err := f.sw.Switch(context.Background(), SwitchRequest{Watch: Watch{Duration: 300 * time.Millisecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("the switch took %s; want the old app kept for the 300ms watch", took)
	}
	if got := f.stopper.stopped(); len(got) != 1 || got[0] != blue.addr() || res.Stopped == "" {
		t.Errorf("stopped %v (%q); want blue, after the watch", got, res.Stopped)
	}
	if f.sw.Live() != Green {
		t.Errorf("live %s; want green", f.sw.Live())
	}
}

func TestJudge(t *testing.T) {
	mk := func(n, errs int, d time.Duration) sample {
		var tl Tally
		tl.arm()
		for i := range n {
			status := 200
			if i < errs {
				status = 500
			}
			tl.Record(Green, status, d)
		}
		return tl.snapshot(Green)
	}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		th      Thresholds
		nw, old sample
		verdict string
		reason  string
	}{
		{"too few", Thresholds{}, mk(50, 50, time.Millisecond), mk(1000, 0, time.Millisecond), "waiting", ""},
		{"same", Thresholds{}, mk(200, 2, time.Millisecond), mk(1000, 10, time.Millisecond), "ok", ""},
		{"errors", Thresholds{}, mk(200, 20, time.Millisecond), mk(1000, 10, time.Millisecond), "fail", ReasonErrorRate},
		{"errors, no baseline", Thresholds{}, mk(200, 10, time.Millisecond), sample{}, "fail", ReasonErrorRate},
		{"errors under a fixed limit", Thresholds{MaxErrorRate: 0.05}, mk(200, 8, time.Millisecond), mk(1000, 0, time.Millisecond), "ok", ""},
		{"errors over a fixed limit", Thresholds{MaxErrorRate: 0.05}, mk(200, 30, time.Millisecond), mk(1000, 0, time.Millisecond), "fail", ReasonErrorRate},
		{"errors over a fixed limit by chance", Thresholds{MaxErrorRate: 0.05}, mk(200, 12, time.Millisecond), mk(1000, 0, time.Millisecond), "ok", ""},
		{"a little over the old rate by chance", Thresholds{}, mk(100, 2, time.Millisecond), mk(5000, 25, time.Millisecond), "ok", ""},
		{"slow", Thresholds{}, mk(2000, 0, 400*time.Millisecond), mk(2000, 0, 10*time.Millisecond), "fail", ReasonLatency},
		{"slow, too few to tell", Thresholds{}, mk(200, 0, 400*time.Millisecond), mk(2000, 0, 10*time.Millisecond), "ok", ""},
		{"a little slower", Thresholds{}, mk(2000, 0, 15*time.Millisecond), mk(2000, 0, 10*time.Millisecond), "ok", ""},
		{"slow, no baseline", Thresholds{}, mk(2000, 0, 400*time.Millisecond), sample{}, "ok", ""},
		{"over a fixed p99", Thresholds{MaxP99: 100 * time.Millisecond}, mk(2000, 0, 150*time.Millisecond), sample{}, "fail", ReasonLatency},
		{"under a fixed p99", Thresholds{MaxP99: 100 * time.Millisecond}, mk(2000, 0, 80*time.Millisecond), sample{}, "ok", ""},
	} {
		j := judge(tc.th, Green, Blue, tc.nw, tc.old, now)
		if j.Verdict != tc.verdict || j.Reason != tc.reason {
			t.Errorf("%s: %s %s (%s); want %s %s", tc.name, j.Verdict, j.Reason, j.Message, tc.verdict, tc.reason)
		}
	}
}

func TestQuantile(t *testing.T) {
	var tl Tally
	tl.arm()
	for i := 1; i <= 1000; i++ {
		tl.Record(Blue, 200, time.Duration(i)*time.Millisecond)
	}
	s := tl.snapshot(Blue)
	if p := s.quantile(0.99); p < 940*time.Millisecond || p > 1040*time.Millisecond {
		t.Errorf("p99 of 1..1000ms = %s; want about 990ms", p)
	}
	if p := s.quantile(0.5); p < 470*time.Millisecond || p > 530*time.Millisecond {
		t.Errorf("p50 of 1..1000ms = %s; want about 500ms", p)
	}
	var off Tally
	off.Record(Blue, 500, time.Millisecond)
	if off.snapshot(Blue).responses != 0 {
		t.Error("a disarmed tally counted")
	}
}

func TestWindowForgetsOldAnswers(t *testing.T) {
	var tl Tally
	tl.arm()
	t0 := time.Now()
	w := newWindow(&tl, time.Second, t0)
	for range 100 {
		tl.Record(Green, 500, time.Millisecond)
	}
	w.add(t0.Add(500 * time.Millisecond))
	if d := w.delta(Green); d.errors != 100 {
		t.Fatalf("errors in the window %d; want 100", d.errors)
	}
	for range 50 {
		tl.Record(Green, 200, time.Millisecond)
	}
	w.add(t0.Add(1600 * time.Millisecond))
	w.add(t0.Add(1700 * time.Millisecond))
	if d := w.delta(Green); d.errors != 0 || d.responses != 50 {
		t.Errorf("window after 1.7s: %d errors of %d; want 0 of 50 (the errors are older than 1s)", d.errors, d.responses)
	}
}

// Issue 13, item 16: 'baton rollout --abort' and '--promote' printed the
// rollout as it was before the command. Steer now answers with what the
// command did: the share the new version is left with and what happens
// next, for a canary and for the watch after a deploy.
func TestSteerAnswersTheStateAfterTheCommand(t *testing.T) {
	for _, tc := range []struct {
		name, action, phase string
		watch               bool
		percent             int
	}{
		{"canary abort", "abort", "aborting", false, 0},
		{"canary promote", "promote", "promoting", false, 100},
		{"watch abort", "abort", "aborting", true, 0},
		{"watch promote", "promote", "promoting", true, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newRolloutFixture(t)
			want := "canary"
			done := make(chan error, 1)
			if tc.watch {
				want = "watch"
				go func() {
					_, err := f.sw.Deploy(context.Background(), DeployRequest{Version: "v2", Watch: Watch{Duration: time.Minute}}, nil)
					done <- err
				}()
			} else {
				wait := f.start(t, RolloutRequest{DeployRequest: DeployRequest{Version: "v2"}, Steps: []int{10, 50}, StepInterval: time.Minute})
				go func() { _, _, err := wait(); done <- err }()
			}
			f.waitRollout(t, want)
			st, err := f.sw.Steer(RolloutCommand{Action: tc.action})
			if err != nil {
				t.Fatal(err)
			}
			if st.Phase != tc.phase || st.Percent != tc.percent || !st.NextStep.IsZero() {
				t.Errorf("Steer(%s) answered phase %q, %d%%, next step %v; want %q, %d%%, no next step",
					tc.action, st.Phase, st.Percent, st.NextStep, tc.phase, tc.percent)
			}
			<-done
		})
	}
}
