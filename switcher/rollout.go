package switcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonproxy/baton/state"
)

// Rollout errors a caller can act on.
var (
	// ErrNoRollout: no canary or watch is running to steer.
	ErrNoRollout = errors.New("no rollout is running")
	// ErrRolledBack: the judge (or the new instance's exit) sent the
	// traffic back to the old version; the error says why.
	ErrRolledBack = errors.New("rolled back")
	// ErrAborted: an operator aborted the rollout.
	ErrAborted = errors.New("aborted")
)

// DefaultStickyCookie is the cookie baton sets to keep a client on one
// version during a canary (SplitRules.StickyCookie) of the default service;
// StickyCookieOf names the others'.
const DefaultStickyCookie = "baton_canary"

// StickyCookieOf returns the sticky cookie of service's canaries:
// baton_canary_<service>, so that two services under one domain (a shop and
// its /admin) do not share a split; DefaultStickyCookie for the default
// service (state.DefaultService), whose cookie kept its name from before
// services. Service names are DNS labels, so the name is a valid cookie name.
func StickyCookieOf(service string) string {
	if service == "" || service == state.DefaultService {
		return DefaultStickyCookie
	}
	return DefaultStickyCookie + "_" + service
}

// Splitter is an optional interface of a Router: it sends a share of the
// requests to the colour that is not live, for a canary.
type Splitter interface {
	// Split sends percent% of requests, and every allow-listed one, to
	// canary; the live colour takes the rest. Calls with the same seed keep
	// each sticky client in the same bucket, so raising the share only
	// moves clients to the canary. It takes effect for the next request.
	Split(canary Color, percent int, rules SplitRules, seed string) error
	// Unsplit sends every request to the live colour again. Requests
	// already on the canary finish there: drain it before stopping it.
	Unsplit()
}

// SplitRules says which requests a canary takes beyond its share, and how
// a client keeps its version. The zero value places every request at
// random and has no allow-list.
type SplitRules struct {
	// At most one of the three: StickyCookie is a cookie baton sets with
	// a random token; StickyHeader and StickyAppCookie are a header or
	// cookie the app already has (a user ID, a session) whose value is
	// hashed into the bucket.
	StickyCookie    string `json:"sticky_cookie,omitempty"`
	StickyHeader    string `json:"sticky_header,omitempty"`
	StickyAppCookie string `json:"sticky_app_cookie,omitempty"`
	// Requests with this header value, or this cookie value, always go
	// to the canary.
	AllowHeader      string `json:"allow_header,omitempty"`
	AllowHeaderValue string `json:"allow_header_value,omitempty"`
	AllowCookie      string `json:"allow_cookie,omitempty"`
	AllowCookieValue string `json:"allow_cookie_value,omitempty"`
}

func (r SplitRules) validate() error {
	var errs []error
	n := 0
	for _, v := range []string{r.StickyCookie, r.StickyHeader, r.StickyAppCookie} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("more than one kind of stickiness: pick baton's cookie, a header or an app cookie"))
	}
	for _, f := range []struct{ what, v string }{{"sticky cookie", r.StickyCookie}, {"sticky header", r.StickyHeader},
		{"sticky app cookie", r.StickyAppCookie}, {"canary header", r.AllowHeader}, {"canary cookie", r.AllowCookie}} {
		if f.v != "" && !isToken(f.v) {
			errs = append(errs, fmt.Errorf("%s %q: want a header or cookie name (letters, digits, - _ .)", f.what, f.v))
		}
	}
	if (r.AllowHeader == "") != (r.AllowHeaderValue == "") {
		errs = append(errs, errors.New("canary header needs a name and a value"))
	}
	if (r.AllowCookie == "") != (r.AllowCookieValue == "") {
		errs = append(errs, errors.New("canary cookie needs a name and a value"))
	}
	if strings.ContainsAny(r.AllowHeaderValue+r.AllowCookieValue, "\r\n;") {
		errs = append(errs, errors.New("canary header or cookie value contains a line break or ';'"))
	}
	return errors.Join(errs...)
}

func (r SplitRules) describe() (sticky string, allow []string) {
	switch {
	case r.StickyCookie != "":
		sticky = "cookie " + r.StickyCookie + " (set by baton)"
	case r.StickyHeader != "":
		sticky = "header " + r.StickyHeader
	case r.StickyAppCookie != "":
		sticky = "cookie " + r.StickyAppCookie
	}
	if r.AllowHeader != "" {
		allow = append(allow, "header "+r.AllowHeader+": "+r.AllowHeaderValue)
	}
	if r.AllowCookie != "" {
		allow = append(allow, "cookie "+r.AllowCookie+"="+r.AllowCookieValue)
	}
	return sticky, allow
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// Watch asks for a watch after traffic moved to a new version (a switch, a
// deploy, or a rollout's promote): for Duration the old app keeps running
// while the judge compares the new version with Thresholds; then the old
// app is stopped. If the new version fails, traffic goes back to the old
// one and the new one is drained and stopped. Zero Duration means no watch.
type Watch struct {
	Duration time.Duration
	Thresholds
}

func (w Watch) validate() error {
	if w.Duration < 0 {
		return fmt.Errorf("watch %s is negative", w.Duration)
	}
	return w.Thresholds.validate()
}

// RolloutRequest asks for a canary rollout of a new version.
type RolloutRequest struct {
	// DeployRequest names the version to start. Its Watch's Thresholds
	// judge the canary as well as the watch after the promote.
	DeployRequest
	// Watch is how long to watch after the promote (Thresholds apply to
	// the canary too); zero Duration: stop the old version at once.
	Watch Watch
	// Steps are the canary's shares in per cent, rising; the first is
	// where it starts. A last step of 100 promotes.
	Steps []int
	// StepInterval is the time between steps; 0 means the rollout steps,
	// promotes and aborts only on command (Steer).
	StepInterval time.Duration
	Rules        SplitRules
}

func (r RolloutRequest) validate() error {
	var errs []error
	if len(r.Steps) == 0 {
		errs = append(errs, errors.New("no canary share: give the first step, e.g. 10 (per cent)"))
	}
	for i, p := range r.Steps {
		switch {
		case p < 0 || p > 100:
			errs = append(errs, fmt.Errorf("step %d%%: want 0-100", p))
		case i > 0 && p <= r.Steps[i-1]:
			errs = append(errs, fmt.Errorf("steps %v: want them rising", r.Steps))
		}
	}
	if len(r.Steps) > 0 && r.Steps[0] >= 100 {
		errs = append(errs, errors.New("the first step is 100%: that is a deploy, not a canary"))
	}
	if r.StepInterval < 0 {
		errs = append(errs, fmt.Errorf("step interval %s is negative", r.StepInterval))
	}
	if len(r.Steps) > 1 && r.StepInterval == 0 {
		errs = append(errs, errors.New("several steps need a step interval"))
	}
	if err := r.Watch.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := r.Rules.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// RolloutObserver is an optional interface of Config.Observer: it is told
// about canaries and rollbacks, e.g. to export metrics. Its methods are
// called like Observer's.
type RolloutObserver interface {
	// CanaryPercent is called when the canary's share changes; 0 when the
	// split ends.
	CanaryPercent(canary Color, percent int)
	// Rollback is called when traffic went back to the old version, with
	// the reason (ReasonErrorRate, ReasonLatency, ReasonExited,
	// ReasonCommand).
	Rollback(reason string)
	// RolloutDone is called when a rollout ends: "promoted", "aborted",
	// "rolled_back" or "failed".
	RolloutDone(result string)
}

type nopRolloutObserver struct{}

func (nopRolloutObserver) CanaryPercent(Color, int) {}
func (nopRolloutObserver) Rollback(string)          {}
func (nopRolloutObserver) RolloutDone(string)       {}

func (s *Switcher) rolloutObserver() RolloutObserver {
	if o, ok := s.cfg.Observer.(RolloutObserver); ok {
		return o
	}
	return nopRolloutObserver{}
}

// RolloutStatus describes the running canary, or the watch after a switch,
// deploy or promote.
type RolloutStatus struct {
	ID string `json:"id"`
	// Kind is the operation: rollout, deploy or switch.
	Kind string `json:"kind"`
	// Phase is "canary" (traffic is split) or "watch" (the new version
	// takes it all; the old one still runs); "promoting" or "aborting"
	// once such a command was taken, until the rollout has ended.
	Phase   string `json:"phase"`
	Version string `json:"version,omitempty"`
	Old     string `json:"old"`
	New     string `json:"new"`
	// Percent is the new version's share of requests.
	Percent int   `json:"percent"`
	Steps   []int `json:"steps,omitempty"`
	// Step is the 1-based index in Steps of the share; 0 if a command set it.
	Step       int       `json:"step"`
	NextStep   time.Time `json:"next_step,omitzero"`
	Since      time.Time `json:"since"`
	StepSince  time.Time `json:"step_since,omitzero"`
	WatchUntil time.Time `json:"watch_until,omitzero"`
	// Sticky says how clients keep their version; empty: per request.
	Sticky string     `json:"sticky,omitempty"`
	Allow  []string   `json:"allow,omitempty"`
	Judge  *Judgement `json:"judge,omitempty"`
}

// RolloutCommand steers the running rollout (Steer).
type RolloutCommand struct {
	// Action is "percent" (set the canary's share to Percent; a schedule
	// goes on with the steps above it), "promote" (during a watch: end it
	// now and stop the old version) or "abort" (all traffic back to the
	// old version, the new one drained and stopped).
	Action  string `json:"action"`
	Percent int    `json:"percent,omitempty"`
}

// rolloutState is the Switcher's part for canaries and watches.
type rolloutState struct {
	mu    sync.Mutex // guards cur; taken after Switcher.mu, never before
	cur   *run
	tally *Tally
	every time.Duration // judge interval; 0 means DefaultJudgeEvery
}

// run is a canary or a watch in progress. The operation's goroutine owns
// it: it alone changes the split, and reads commands from cmds until it
// closes done. status is published under mu for Status.
type run struct {
	cmds chan rolloutCmd
	done chan struct{}

	mu     sync.Mutex
	status RolloutStatus
}

type rolloutCmd struct {
	RolloutCommand
	reply chan error
}

func (r *run) update(f func(*RolloutStatus)) {
	r.mu.Lock()
	f(&r.status)
	r.mu.Unlock()
}

// settle records, before a promote or abort command is answered, what the
// command does: phase "promoting" or "aborting", and the new version's
// share once it is done (100 or 0). Steer answers with it, so the caller
// sees the rollout as the command leaves it, not as it was.
func (r *run) settle(phase string, percent int) {
	r.update(func(st *RolloutStatus) {
		st.Phase, st.Percent, st.StepSince, st.NextStep = phase, percent, time.Now(), time.Time{}
	})
}

func (r *run) snapshot() RolloutStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Steps = slices.Clone(st.Steps)
	st.Allow = slices.Clone(st.Allow)
	if st.Judge != nil {
		j := *st.Judge
		st.Judge = &j
	}
	return st
}

// SetTally gives the Switcher the counts of each colour's answers that the
// judge of a canary or a watch reads; cmd feeds t from the proxy. Without
// one (or without traffic) the judge never has enough answers to roll
// back. Call it once, before serving.
func (s *Switcher) SetTally(t *Tally) {
	s.ro.mu.Lock()
	s.ro.tally = t
	s.ro.mu.Unlock()
}

func (s *Switcher) tally() *Tally {
	s.ro.mu.Lock()
	defer s.ro.mu.Unlock()
	if s.ro.tally == nil {
		s.ro.tally = &Tally{}
	}
	return s.ro.tally
}

func (s *Switcher) judgeEvery() time.Duration {
	if s.ro.every > 0 {
		return s.ro.every
	}
	return DefaultJudgeEvery
}

func (s *Switcher) startRun(st RolloutStatus) *run {
	r := &run{cmds: make(chan rolloutCmd), done: make(chan struct{}), status: st}
	s.ro.mu.Lock()
	s.ro.cur = r
	s.ro.mu.Unlock()
	return r
}

// endRun stops r taking commands; Status no longer shows it.
func (s *Switcher) endRun(r *run) {
	close(r.done)
	s.ro.mu.Lock()
	if s.ro.cur == r {
		s.ro.cur = nil
	}
	s.ro.mu.Unlock()
}

// rolloutStatus returns the running canary or watch, nil if none.
func (s *Switcher) rolloutStatus() *RolloutStatus {
	s.ro.mu.Lock()
	r := s.ro.cur
	s.ro.mu.Unlock()
	if r == nil {
		return nil
	}
	st := r.snapshot()
	return &st
}

// Rollout starts req's version on the idle colour as a canary: stop what
// baton left there → launch → health check (as a deploy) → send the first
// step's share of requests to it → step up on schedule or on command →
// promote (swap, drain and stop the old version, as a switch, after an
// optional watch) or abort (all traffic back to the old version, the new one
// drained and stopped). The judge compares the two versions all along and
// aborts on its own when the new one is worse (ErrRolledBack). The rollout
// holds the operation lock throughout, so switches and deploys meanwhile
// fail with ErrBusy; steer it with Steer. Once the canary takes traffic the
// rollout runs to its end even if ctx is cancelled.
func (s *Switcher) Rollout(ctx context.Context, req RolloutRequest, emit func(Event)) (DeployResult, error) {
	sp, ok := s.router.(Splitter)
	if !ok {
		return DeployResult{}, fmt.Errorf("%w: this baton's router cannot split traffic", ErrInvalid)
	}
	s.mu.Lock()
	l := s.launch.launcher
	s.mu.Unlock()
	if l == nil {
		return DeployResult{}, fmt.Errorf("%w: %w: start baton serve with --run (and --ssh for a remote host)", ErrInvalid, ErrNoLauncher)
	}
	if err := CheckVersion(req.Version); err != nil {
		return DeployResult{}, err
	}
	if err := req.validate(); err != nil {
		return DeployResult{}, err
	}
	release, err := s.acquire()
	if err != nil {
		return DeployResult{}, err
	}
	defer release()

	const kind = "rollout"
	from := s.Live()
	to := from.Other()
	res := DeployResult{Result: Result{ID: newID(), From: from, To: to}, Version: req.Version}
	started := time.Now()
	sched := fmt.Sprintf("steps %v%% every %s", req.Steps, req.StepInterval)
	if req.StepInterval == 0 {
		sched = fmt.Sprintf("%d%%, then on command", req.Steps[0])
	}
	ev, done, err := s.startOp(kind, req.Version, &res.Result, sched, emit)
	if err != nil {
		return res, err
	}

	obs := s.rolloutObserver()
	finish := func(result string, err error) (DeployResult, error) {
		s.cfg.Observer.DeployDone(res.Result, done(err))
		obs.RolloutDone(result)
		return res, err
	}
	proc, err := s.launchIdle(ctx, kind, l, req.DeployRequest, false, &res, ev)
	if err != nil {
		return finish("failed", err)
	}
	// Healthy: from here on the rollout runs to its end even if the
	// caller goes away; steer it with Steer.
	ctx = context.WithoutCancel(ctx)
	s.remember(to, proc)
	if err := s.save(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("could not save the new instance in the state (%v)", err))
	}

	tally := s.tally()
	tally.arm()
	defer tally.disarm()
	exit := watchExit(proc)
	defer exit.stop()
	sticky, allow := req.Rules.describe()
	r := s.startRun(RolloutStatus{ID: res.ID, Kind: kind, Phase: "canary", Version: req.Version, Old: from.String(), New: to.String(),
		Steps: slices.Clone(req.Steps), Since: started.UTC(), Sticky: sticky, Allow: allow})
	win := newWindow(tally, req.Watch.window(), time.Now())
	promote, why := s.canary(sp, proc, exit, req, &res, r, win, ev)
	s.endRun(r)

	if !promote {
		sp.Unsplit()
		obs.CanaryPercent(to, 0)
		ev("abort", fmt.Sprintf("%s; all requests go to %s again", why.msg, from), 0)
		left, _ := s.drain(ctx, to, ev, nil)
		res.Abandoned = left
		s.router.CloseIdle(to)
		if why.reason == ReasonExited {
			res.LogTail = s.logTail(ctx, proc, res.Instance.Log, ev)
		}
		res.Stopped = s.stopOld(ctx, to, ev)
		if why.reason == "" {
			return finish("failed", fmt.Errorf("%s %s to %s: %s; %s", kind, req.Version, to, why.msg, s.keepsServing(ctx, from)))
		}
		obs.Rollback(why.reason)
		if why.reason == ReasonCommand {
			return finish("aborted", fmt.Errorf("%s %s to %s: %w: %s; %s", kind, req.Version, to, ErrAborted, why.msg, s.keepsServing(ctx, from)))
		}
		return finish("rolled_back", fmt.Errorf("%s %s to %s: %w: %s; %s", kind, req.Version, to, ErrRolledBack, why.msg, s.keepsServing(ctx, from)))
	}

	// Promote: the route swap sends everything to the new version (the
	// split still names it as the canary, so nothing reaches the old one
	// in between), then the split goes.
	baseline := win.delta(from)
	s.mu.Lock()
	previous := s.st.Previous
	s.mu.Unlock()
	ev("promote", fmt.Sprintf("%s (%s) takes all requests; %s is drained", to, req.Version, from), 0)
	swapped := time.Now()
	aborted := s.handOver(ctx, &res.Result, ev, exit.done)
	sp.Unsplit()
	obs.CanaryPercent(to, 0)
	if aborted {
		obs.Rollback(ReasonExited)
		return finish("rolled_back", s.swapBack(ctx, kind, &res, previous, proc, exit.err, time.Since(swapped), ev))
	}
	stopped, err := s.settle(ctx, kind, req.Version, &res.Result, req.Watch, &baseline, exit, ev)
	res.Stopped = stopped
	if err != nil {
		return finish("rolled_back", err)
	}
	return finish("promoted", nil)
}

// rollbackWhy says why a canary or a watch ended without the new version:
// reason is one of the Reason constants, or "" for a failure of baton's own
// (the split could not be set).
type rollbackWhy struct {
	reason, msg string
}

// canary runs the split until the rollout is promoted (true) or must be
// aborted (false, and why).
func (s *Switcher) canary(sp Splitter, proc Process, exit *exitWatch, req RolloutRequest, res *DeployResult, r *run, win *window, ev stepFunc) (promote bool, why rollbackWhy) {
	from, to := res.From, res.To
	th := req.Watch.Thresholds
	obs := s.rolloutObserver()
	steps := req.Steps
	setShare := func(p, step int, how string) error {
		if err := sp.Split(to, p, req.Rules, res.ID); err != nil {
			return fmt.Errorf("split %d%% to %s: %w", p, to, err)
		}
		obs.CanaryPercent(to, p)
		now := time.Now().UTC()
		r.update(func(st *RolloutStatus) {
			st.Percent, st.Step, st.StepSince = p, step, now
			st.NextStep = time.Time{}
			if req.StepInterval > 0 && step < len(steps) {
				st.NextStep = now.Add(req.StepInterval)
			}
		})
		ev("canary", fmt.Sprintf("%d%% of requests to %s (%s)%s", p, to, req.Version, how), 0)
		return nil
	}
	if err := setShare(steps[0], 1, ""); err != nil {
		return false, rollbackWhy{"", err.Error()}
	}
	next := 1 // index in steps of the next scheduled share
	var stepC <-chan time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	if req.StepInterval > 0 && next < len(steps) {
		timer.Reset(req.StepInterval)
		stepC = timer.C
	}
	tick := time.NewTicker(s.judgeEvery())
	defer tick.Stop()
	lastNote, lastVerdict := time.Now(), ""
	for {
		select {
		case c := <-r.cmds:
			switch c.Action {
			case "percent":
				err := setShare(c.Percent, 0, " (by command)")
				for next < len(steps) && steps[next] <= c.Percent {
					next++
				}
				if err == nil && stepC != nil {
					timer.Reset(req.StepInterval)
					if next >= len(steps) {
						timer.Stop()
						stepC = nil
					}
				}
				c.reply <- err
			case "promote":
				r.settle("promoting", 100)
				c.reply <- nil
				return true, rollbackWhy{}
			case "abort":
				r.settle("aborting", 0)
				c.reply <- nil
				return false, rollbackWhy{ReasonCommand, "aborted by command"}
			default:
				c.reply <- fmt.Errorf("%w: unknown action %q", ErrInvalid, c.Action)
			}
		case <-stepC:
			p := steps[next]
			next++
			if p >= 100 {
				ev("canary", "the last step is 100%: promoting", 0)
				return true, rollbackWhy{}
			}
			if err := setShare(p, next, fmt.Sprintf(" (step %d of %d)", next, len(steps))); err != nil {
				return false, rollbackWhy{"", err.Error()}
			}
			if next < len(steps) {
				timer.Reset(req.StepInterval)
			} else {
				stepC = nil
			}
		case now := <-tick.C:
			win.add(now)
			j := judge(th, to, from, win.delta(to), win.delta(from), now)
			r.update(func(st *RolloutStatus) { st.Judge = &j })
			if j.Verdict == "fail" {
				ev("judge", j.Message, 0)
				return false, rollbackWhy{j.Reason, j.Message}
			}
			if j.Verdict != lastVerdict || now.Sub(lastNote) >= judgeNoteEvery {
				ev("canary", "judge "+j.Verdict+": "+j.Message, 0)
				lastNote, lastVerdict = now, j.Verdict
			}
		case <-exit.done:
			return false, rollbackWhy{ReasonExited, fmt.Sprintf("the new %s instance (%s) exited: %v", to, proc, exitErr(exit))}
		}
	}
}

// judgeNoteEvery is how often a running judge reports in the operation's
// events when nothing changes.
const judgeNoteEvery = 10 * time.Second

func exitErr(w *exitWatch) error {
	if w.err == nil {
		return errors.New("exit status 0")
	}
	return w.err
}

// settle ends an operation whose traffic has moved from res.From to res.To.
// Without a watch it stops the old app (stopOld). With one, the old app
// keeps running for w.Duration while the judge compares the new version with
// w's thresholds and with base, the old version's answers from before (nil:
// unknown); then the old app is stopped. If the new version fails, its
// instance exits (exit, which may be nil) or an abort command comes,
// traffic goes back to the old app, the new one is drained and stopped, and
// the error wraps ErrRolledBack or ErrAborted. It returns what it stopped.
func (s *Switcher) settle(ctx context.Context, kind, version string, res *Result, w Watch, base *sample, exit *exitWatch, ev stepFunc) (string, error) {
	from, to := res.From, res.To
	if w.Duration <= 0 {
		return s.stopOld(ctx, from, ev), nil
	}
	tally := s.tally()
	tally.arm()
	defer tally.disarm()
	now := time.Now()
	r := s.startRun(RolloutStatus{ID: res.ID, Kind: kind, Phase: "watch", Version: version, Old: from.String(), New: to.String(),
		Percent: 100, Since: now.UTC(), WatchUntil: now.Add(w.Duration).UTC()})
	win := newWindow(tally, w.window(), now)
	why := s.watch(r, w, base, win, from, to, exit, ev)
	s.endRun(r)
	if why == nil {
		return s.stopOld(ctx, from, ev), nil
	}

	what := kind + " to " + to.String()
	if version != "" {
		what = kind + " " + version + " to " + to.String()
	}
	cause := ErrRolledBack
	if why.reason == ReasonCommand {
		cause = ErrAborted
	}
	ev("rollback", why.msg, 0)
	// The old app has run idle during the watch; make sure it still
	// answers before handing it the traffic again.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	herr := s.prober.Check(cctx, s.cfg.Addrs[from])
	cancel()
	if herr != nil {
		return "", fmt.Errorf("%s: %w: %s; but %s fails its health check (%v), so %s keeps serving and both still run", what, cause, why.msg, from, herr, to)
	}
	back := Result{ID: res.ID, From: to, To: from}
	s.handOver(ctx, &back, ev, nil)
	stopped := s.stopOld(ctx, to, ev)
	s.rolloutObserver().Rollback(why.reason)
	return stopped, fmt.Errorf("%s: %w: %s; %s is live again", what, cause, why.msg, from)
}

// watch judges the new colour until the watch ends (nil) or it must be
// rolled back (why).
func (s *Switcher) watch(r *run, w Watch, base *sample, win *window, from, to Color, exit *exitWatch, ev stepFunc) *rollbackWhy {
	ev("watch", fmt.Sprintf("watching %s for %s; %s keeps running until then", to, w.Duration, from), 0)
	timer := time.NewTimer(w.Duration)
	defer timer.Stop()
	tick := time.NewTicker(s.judgeEvery())
	defer tick.Stop()
	var exited <-chan struct{}
	if exit != nil {
		exited = exit.done
	}
	old := func() sample {
		if base != nil {
			return *base
		}
		return win.delta(from)
	}
	lastNote, lastVerdict := time.Now(), ""
	for {
		select {
		case <-timer.C:
			win.add(time.Now())
			j := judge(w.Thresholds, to, from, win.delta(to), old(), time.Now())
			ev("watch", fmt.Sprintf("%s passed the %s watch: %s", to, w.Duration, j.Message), 0)
			return nil
		case c := <-r.cmds:
			switch c.Action {
			case "promote":
				r.settle("promoting", 100)
				c.reply <- nil
				ev("watch", "ended early by command", 0)
				return nil
			case "abort":
				r.settle("aborting", 0)
				c.reply <- nil
				return &rollbackWhy{ReasonCommand, "rolled back by command"}
			case "percent":
				c.reply <- fmt.Errorf("%w: %s takes all requests during the watch; promote (end the watch) or abort (roll back)", ErrInvalid, to)
			default:
				c.reply <- fmt.Errorf("%w: unknown action %q", ErrInvalid, c.Action)
			}
		case now := <-tick.C:
			win.add(now)
			j := judge(w.Thresholds, to, from, win.delta(to), old(), now)
			r.update(func(st *RolloutStatus) { st.Judge = &j })
			if j.Verdict == "fail" {
				ev("judge", j.Message, 0)
				return &rollbackWhy{j.Reason, j.Message}
			}
			if j.Verdict != lastVerdict || now.Sub(lastNote) >= judgeNoteEvery {
				ev("watch", "judge "+j.Verdict+": "+j.Message, 0)
				lastNote, lastVerdict = now, j.Verdict
			}
		case <-exited:
			return &rollbackWhy{ReasonExited, fmt.Sprintf("the new %s instance exited: %v", to, exitErr(exit))}
		}
	}
}

// Steer sends cmd to the running canary or watch and returns its status
// after the command took effect. A promote or an abort returns once
// accepted; the operation's own stream reports how it ends.
func (s *Switcher) Steer(cmd RolloutCommand) (RolloutStatus, error) {
	switch cmd.Action {
	case "percent":
		if cmd.Percent < 0 || cmd.Percent > 100 {
			return RolloutStatus{}, fmt.Errorf("%w: percent %d: want 0-100", ErrInvalid, cmd.Percent)
		}
	case "promote", "abort":
	default:
		return RolloutStatus{}, fmt.Errorf("%w: action %q: want percent, promote or abort", ErrInvalid, cmd.Action)
	}
	s.ro.mu.Lock()
	r := s.ro.cur
	s.ro.mu.Unlock()
	if r == nil {
		return RolloutStatus{}, ErrNoRollout
	}
	reply := make(chan error, 1)
	select {
	case r.cmds <- rolloutCmd{RolloutCommand: cmd, reply: reply}:
	case <-r.done:
		return RolloutStatus{}, fmt.Errorf("%w: it is finishing", ErrNoRollout)
	}
	err := <-reply
	return r.snapshot(), err
}

// launchIdle is a deploy's part before the swap: stop what baton left on
// the idle colour, launch req there and wait until it is healthy, failing
// at once if it exits. installed says that req.Artifact is already
// installed where the instance runs (a rollback). On failure the new
// instance is stopped, res carries its log tail, and the error says why.
func (s *Switcher) launchIdle(ctx context.Context, kind string, l Launcher, req DeployRequest, installed bool, res *DeployResult, ev stepFunc) (Process, error) {
	from, to := res.From, res.To
	if err := s.clearIdle(ctx, to, ev); err != nil {
		return nil, fmt.Errorf("%s %s to %s: %w; %s", kind, req.Version, to, err, s.keepsServing(ctx, from))
	}
	t := time.Now()
	proc, err := l.Launch(ctx, LaunchSpec{
		ID: res.ID, Color: to, Port: portOf(s.cfg.Addrs[to]), Artifact: req.Artifact, Version: req.Version, Installed: installed,
		Progress: func(msg string) { ev("install", msg, 0) },
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s to %s: %w: %w; %s", kind, req.Version, to, ErrLaunch, err, s.keepsServing(ctx, from))
	}
	res.Instance = proc.Record()
	res.Instance.Addr = s.cfg.Addrs[to]
	s.markLaunched(res.Instance)
	ev("launch", fmt.Sprintf("started %s; log %s", proc, res.Instance.Log), time.Since(t))
	if err := s.waitStarted(ctx, to, proc, ev); err != nil {
		// Never leave a half-started instance behind, even if the caller
		// went away.
		sctx := context.WithoutCancel(ctx)
		t := time.Now()
		desc, serr := proc.Stop(sctx, syscall.SIGTERM, s.cfg.StopTimeout)
		if serr != nil {
			desc = "could not stop the new instance: " + serr.Error()
			s.remember(to, proc) // so that the next deploy stops it first
		}
		ev("stop", desc, time.Since(t))
		res.LogTail = s.logTail(sctx, proc, res.Instance.Log, ev)
		return nil, fmt.Errorf("%s %s to %s: %w; %s (log: %s)", kind, req.Version, to, err, s.keepsServing(sctx, from), res.Instance.Log)
	}
	return proc, nil
}
