// Package switcher is baton's control path: the state machine that moves
// traffic from the live colour to the idle one.
//
// A switch is one function, one step a line: wait until the idle colour's app
// passes N health checks in a row → swap the route → persist the new live
// colour → drain the old colour's requests in flight (deadline) → close its
// idle connections → stop its process → record the switch. Every step emits
// an Event, which the admin API streams to the caller. One operation runs at
// a time; a second one is refused with ErrBusy.
//
// Durability: before an operation changes anything it saves itself in the
// state as pending (if that save fails, the operation is refused and nothing
// changes), the swap saves the new live colour, and the end moves the
// pending entry to the history. A baton killed in the middle therefore
// finds, when it starts again, the live colour it last routed to, the
// instances it launched (the new one included) to adopt, and the pending
// entry, which it records in the history as interrupted.
//
// The package declares the small interfaces it needs (Router, Prober,
// Stopper, Store) and imports no concrete proxy or launcher.
package switcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/batonproxy/baton/state"
)

// Defaults for Config.
const (
	DefaultHealthPasses   = 2
	DefaultHealthInterval = 200 * time.Millisecond
	DefaultHealthDeadline = 60 * time.Second
	DefaultDrainTimeout   = 30 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultMonitorEvery   = time.Second
	// ConfirmInterval spaces the passing health checks that confirm a
	// first pass (HealthInterval if that is shorter).
	ConfirmInterval = 50 * time.Millisecond
)

// Errors a caller can act on.
var (
	// ErrBusy: another operation is running.
	ErrBusy = errors.New("another operation is running")
	// ErrInvalid: the request itself is wrong.
	ErrInvalid = errors.New("invalid request")
	// ErrAlreadyLive: the target colour already takes the traffic.
	ErrAlreadyLive = errors.New("already live")
	// ErrHealth: the target never became healthy; nothing was changed.
	ErrHealth = errors.New("health check failed")
	// ErrState: the state file could not be written (a full disk, a
	// read-only file system). An operation that cannot record itself
	// before it starts is refused.
	ErrState = errors.New("cannot save state")
	// ErrPortInUse: a process baton did not start listens on the colour
	// a deploy would launch on.
	ErrPortInUse = errors.New("port in use")
)

// Router moves traffic between colours. Route must take effect for the next
// request without closing any client connection.
type Router interface {
	Route(c Color)
	InFlight(c Color) int64
	CloseIdle(c Color)
}

// TrafficCounter is an optional interface of a Router: what each colour
// answered since it last became live, shown by Status so that an app that
// passes its health checks but fails real requests is visible.
type TrafficCounter interface {
	Traffic(c Color) Traffic
}

// Traffic counts the answers of one colour since Since.
type Traffic struct {
	Since    time.Time `json:"since"`
	Requests uint64    `json:"requests"`
	// Status5xx counts 5xx answers: the app's own, and baton's 502, 503 and
	// 504 when the app could not be reached or did not answer in time.
	Status5xx uint64 `json:"status_5xx"`
}

// StreamEnder is an optional interface of a Router: EndStreams ends the
// long-lived streams (WebSockets, server-sent events) still open on colour
// c cleanly, at a frame boundary, and returns how many it ended once all
// have or ctx is done. The drain calls it when its deadline has passed,
// before the old app is signalled, so that those clients see a clean end
// (and reconnect to the live colour) rather than a broken connection.
type StreamEnder interface {
	EndStreams(ctx context.Context, c Color) int
}

// StreamEndTimeout bounds how long, after the drain deadline, ending the
// old colour's streams may take: a stream whose app is in the middle of a
// frame ends when that frame is complete.
const StreamEndTimeout = 5 * time.Second

// Prober runs one health check against the app at addr.
type Prober interface {
	Check(ctx context.Context, addr string) error
}

// Stopper stops the app serving addr: a polite signal, up to grace to exit,
// then a forced kill. It returns a short description of what it did.
type Stopper interface {
	Stop(ctx context.Context, addr string, grace time.Duration) (string, error)
}

// PortOwners is an optional interface of a Stopper: Owners names the
// processes that listen on addr (e.g. "pid 4242 (java)"), or returns "" if
// it cannot tell. A deploy refused because the port is taken names them.
type PortOwners interface {
	Owners(addr string) string
}

// Store persists baton's state.
type Store interface {
	Load() (state.State, error)
	Save(state.State) error
}

// Config holds a Switcher's settings. Zero durations and counts take the
// Default values.
type Config struct {
	Addrs          [2]string // app address per colour, indexed by Color
	HealthPasses   int
	HealthInterval time.Duration
	HealthDeadline time.Duration
	DrainTimeout   time.Duration
	StopTimeout    time.Duration
	NoStop         bool          // leave the old app running after the drain
	MonitorEvery   time.Duration // background health checks for status
	Observer       Observer      // told of health checks, switches and the live colour; nil means none
}

func (c *Config) setDefaults() {
	if c.HealthPasses <= 0 {
		c.HealthPasses = DefaultHealthPasses
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.HealthDeadline <= 0 {
		c.HealthDeadline = DefaultHealthDeadline
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.MonitorEvery <= 0 {
		c.MonitorEvery = DefaultMonitorEvery
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
}

// Event is one step of an operation, as streamed to the caller and logged.
type Event struct {
	Time time.Time `json:"time"`
	// Step is one of start, health, swap, persist, drain, close_idle, stop,
	// done, failed; a deploy adds prepare, install, launch, swap_back (its
	// new instance died after the swap and the old one is live again), log
	// and prune (old releases removed); a rollback adds plan; a canary rollout adds canary (a share
	// change or a note of the judge), judge (its failing look), abort and
	// promote; a watch adds watch, judge and rollback (and the admin API an
	// artifact step before start).
	Step    string `json:"step"`
	Message string `json:"message"`
	// DurationMS is how long the step took, when it is a step's end.
	DurationMS float64 `json:"duration_ms,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// SwitchRequest asks for a switch. The zero value switches to the idle colour.
type SwitchRequest struct {
	// To is the target colour; nil means the colour that is not live.
	To *Color
	// Watch, if its Duration is set, keeps the old app running for that
	// long after the swap and moves traffic back if the new one fails
	// (see settle in rollout.go).
	Watch Watch
}

// Result describes a finished switch.
type Result struct {
	ID       string
	From, To Color
	Duration time.Duration
	// Drained is how many requests were in flight on the old colour right
	// after the swap; Abandoned is how many were still in flight when the
	// drain deadline passed (0 on a clean drain).
	Drained, Abandoned int64
	// DrainDuration is how long the drain took, deadline included.
	DrainDuration time.Duration
	Stopped       string
	// Warnings lists what went wrong without failing the operation, such
	// as a state file that could not be saved after the swap.
	Warnings []string
}

// Switcher owns the live colour and runs one operation at a time. It is safe
// for concurrent use; create it with New.
type Switcher struct {
	cfg     Config
	router  Router
	prober  Prober
	stopper Stopper
	store   Store
	logger  *slog.Logger

	op sync.Mutex // held for the whole of an operation

	ro rolloutState // canaries and watches: see rollout.go

	mu       sync.Mutex // guards the fields below
	st       state.State
	live     Color
	current  *Operation
	events   []Event // the steps of the running operation, or of the last one (status)
	health   [2]Health
	launch   launchState // see deploy.go
	stateErr string      // the last failed save's error; "" once a save succeeds
}

// Operation describes the running operation, for status.
type Operation struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	To      string    `json:"to"`
	Started time.Time `json:"started"`
	Step    string    `json:"step"`
}

// Health is the last background health check of one colour.
type Health struct {
	Checked   time.Time `json:"checked,omitzero"`
	Healthy   bool      `json:"healthy"`
	Error     string    `json:"error,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when Healthy last changed
	checkedOK bool
}

// New returns a Switcher. It restores the live colour from store; with no
// state yet it picks the first healthy colour, blue first (blue if neither
// answers), and saves that. An unreadable state file is an error: starting
// with a guessed colour could route users to the wrong app.
func New(ctx context.Context, cfg Config, router Router, prober Prober, stopper Stopper, store Store, logger *slog.Logger) (*Switcher, error) {
	cfg.setDefaults()
	var problems []error
	for _, c := range Colors {
		if cfg.Addrs[c] == "" {
			problems = append(problems, fmt.Errorf("no address for %s", c))
		}
	}
	if cfg.Addrs[Blue] != "" && cfg.Addrs[Blue] == cfg.Addrs[Green] {
		problems = append(problems, fmt.Errorf("blue and green have the same address %s", cfg.Addrs[Blue]))
	}
	if err := errors.Join(problems...); err != nil {
		return nil, fmt.Errorf("switcher config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Switcher{cfg: cfg, router: router, prober: prober, stopper: stopper, store: store, logger: logger}
	st, err := store.Load()
	switch {
	case err == nil:
		s.st = st
		s.live, _ = ParseColor(st.Live) // Load validated it
		logger.Info("restored state", "live", s.live, "addr", cfg.Addrs[s.live])
		if st.Pending != nil {
			s.recoverInterrupted()
		}
	case state.IsNotExist(err):
		s.live = s.firstHealthy(ctx)
		s.st = state.State{Live: s.live.String(), Updated: time.Now().UTC()}
		if err := store.Save(s.st); err != nil {
			return nil, fmt.Errorf("save initial state: %w", err)
		}
		logger.Info("no saved state; chose live colour", "live", s.live, "addr", cfg.Addrs[s.live])
	default:
		return nil, err
	}
	router.Route(s.live)
	cfg.Observer.Live(s.live, s.appVersion(s.live))
	if o, ok := cfg.Observer.(LastSwitchObserver); ok {
		if res, finished, ok := lastSwitch(s.st.History); ok {
			o.LastSwitch(res, finished)
		}
	}
	return s, nil
}

// lastSwitch returns the last successful operation of history (each one
// moved traffic) as a Result, and when it finished.
func lastSwitch(history []state.Deploy) (Result, time.Time, bool) {
	for i := len(history) - 1; i >= 0; i-- {
		d := history[i]
		if !d.OK {
			continue
		}
		from, _ := ParseColor(d.From) // Load validated them
		to, _ := ParseColor(d.To)
		return Result{ID: d.ID, From: from, To: to, Duration: d.Duration, Drained: d.Drained,
			Abandoned: d.Abandoned, DrainDuration: d.DrainDuration}, d.Started.Add(d.Duration), true
	}
	return Result{}, time.Time{}, false
}

// recoverInterrupted records the operation that the state says was running
// when baton stopped: as a failed, interrupted entry in the history, with
// what the state tells of how far it got. An instance it had launched is
// recorded on its colour, so that SetLauncher adopts it and the next deploy
// stops it rather than leaving it running unknown.
func (s *Switcher) recoverInterrupted() {
	p := *s.st.Pending
	s.st.Pending = nil
	p.OK, p.Interrupted = false, true
	var where string
	if p.To == s.st.Live {
		where = fmt.Sprintf("after the swap: %s is live, %s was not (fully) drained and stopped", p.To, p.From)
		if _, ok := s.st.Instances[p.From]; ok {
			where += fmt.Sprintf("; %s's instance is adopted and the next deploy stops it", p.From)
		}
	} else {
		where = fmt.Sprintf("before the swap: %s kept the traffic", p.From)
		if p.Instance != nil {
			where += fmt.Sprintf("; the new %s instance (pid %d) is adopted, and the next deploy to %s stops it first", p.To, p.Instance.PID, p.To)
		}
	}
	if p.Instance != nil {
		if s.st.Instances == nil {
			s.st.Instances = map[string]state.Instance{}
		}
		inst := *p.Instance
		inst.Addr = s.cfg.Addrs[colorOf(p.To)]
		s.st.Instances[p.To] = inst
		p.Instance = nil
	}
	p.Error = "interrupted: baton stopped during the " + p.Kind + " " + where
	s.st.History = appendHistory(s.st.History, p)
	s.logger.Warn("the last operation was interrupted", "id", p.ID, "kind", p.Kind, "version", p.Version, "from", p.From, "to", p.To, "err", p.Error)
	if err := s.save(); err != nil {
		s.logger.Error("could not record the interrupted operation", "err", err)
	}
}

func colorOf(s string) Color {
	c, _ := ParseColor(s)
	return c
}

func appendHistory(h []state.Deploy, d state.Deploy) []state.Deploy {
	h = append(h, d)
	if len(h) > state.MaxHistory {
		h = h[len(h)-state.MaxHistory:]
	}
	return h
}

func (s *Switcher) firstHealthy(ctx context.Context) Color {
	for _, c := range Colors {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.prober.Check(cctx, s.cfg.Addrs[c])
		cancel()
		if err == nil {
			return c
		}
		s.logger.Info("initial health check failed", "color", c, "err", err)
	}
	return Blue
}

// Live returns the live colour.
func (s *Switcher) Live() Color {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// Addr returns the app address of colour c.
func (s *Switcher) Addr(c Color) string { return s.cfg.Addrs[c] }

// Switch moves traffic to req.To (default: the idle colour). emit is called
// for each step, from the calling goroutine. If ctx is cancelled before the
// swap, the switch is abandoned and the old colour keeps serving; after the
// swap the switch always runs to the end, because stopping half-way would
// leave an undrained, unstopped old app.
func (s *Switcher) Switch(ctx context.Context, req SwitchRequest, emit func(Event)) (Result, error) {
	release, err := s.acquire()
	if err != nil {
		return Result{}, err
	}
	defer release()

	from := s.Live()
	to := from.Other()
	if req.To != nil {
		to = *req.To
	}
	if to == from {
		return Result{}, fmt.Errorf("%s is %w; nothing to switch (omit the target to switch to %s)", to, ErrAlreadyLive, from.Other())
	}
	return s.runSwitchWatch(ctx, "switch", from, to, req.Watch, emit)
}

// runSwitch moves traffic from from to to, an app baton need not have
// started. The caller holds the operation lock.
func (s *Switcher) runSwitch(ctx context.Context, kind string, from, to Color, emit func(Event)) (Result, error) {
	return s.runSwitchWatch(ctx, kind, from, to, Watch{}, emit)
}

// runSwitchWatch is runSwitch with a watch after the swap.
func (s *Switcher) runSwitchWatch(ctx context.Context, kind string, from, to Color, w Watch, emit func(Event)) (Result, error) {
	res := Result{ID: newID(), From: from, To: to}
	ev, done, err := s.startOp(kind, "", &res, "", emit)
	if err != nil {
		return res, err
	}
	if err := s.waitHealthy(ctx, to, ev); err != nil {
		return res, done(fmt.Errorf("%s to %s: %w; %s", kind, to, err, s.keepsServing(ctx, from)))
	}

	// From here on the switch completes even if the caller goes away.
	ctx = context.WithoutCancel(ctx)
	s.handOver(ctx, &res, ev, nil)
	res.Stopped, err = s.settle(ctx, kind, "", &res, w, nil, nil, ev)
	return res, done(err)
}

// startOp starts an operation that moves traffic from res.From to res.To
// (a switch, deploy, rollout or rollback): the one start and finish path
// they share. It saves the operation as pending in the state, so that a
// baton killed in its middle finds it interrupted when restarted, and if
// that fails nothing was changed and the operation must not go on. It then
// publishes the operation in Status and emits its "start" event (detail,
// if any, ends the event's message). done ends the operation with its
// outcome: it sets res.Duration, moves the operation from pending to the
// history, saves the state and tells the observer (record), clears the
// operation from Status, and returns err. The caller holds the operation
// lock, and calls done exactly once.
func (s *Switcher) startOp(kind, version string, res *Result, detail string, emit func(Event)) (ev stepFunc, done func(error) error, err error) {
	started := time.Now()
	what := kind
	if version != "" {
		what += " " + version
	}
	if err := s.markPending(state.Deploy{ID: res.ID, Kind: kind, Version: version, From: res.From.String(), To: res.To.String(), Started: started.UTC()}); err != nil {
		return nil, nil, fmt.Errorf("%s to %s: %w; nothing was changed", what, res.To, err)
	}
	ev, end := s.begin(kind, res.ID, res.To, started, emit)
	msg := fmt.Sprintf("%s %s: %s (%s) → %s (%s)", what, res.ID, res.From, s.cfg.Addrs[res.From], res.To, s.cfg.Addrs[res.To])
	if detail != "" {
		msg += ", " + detail
	}
	ev("start", msg, 0)
	done = func(err error) error {
		res.Duration = time.Since(started)
		s.record(kind, version, res, started, err)
		end()
		return err
	}
	return ev, done, nil
}

// keepsServing says what serves after an operation away from c failed:
// "blue keeps serving" if blue's app answers its health check, else that no
// app answers there (the first deploy with nothing on blue, or an app that
// died), so an operator does not read "keeps serving" as all is well. The
// check runs even if ctx is cancelled (a caller that went away), bounded.
func (s *Switcher) keepsServing(ctx context.Context, c Color) string {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.prober.Check(cctx, s.cfg.Addrs[c]); err != nil {
		return fmt.Sprintf("%s stays live, but no app answers on %s (%v)", c, c, err)
	}
	return c.String() + " keeps serving"
}

// markPending saves d as the running operation, before it changes
// anything. If the state cannot be saved the operation must not start: a
// crash in its middle would leave no trace of it.
func (s *Switcher) markPending(d state.Deploy) error {
	s.mu.Lock()
	s.st.Pending = &d
	s.mu.Unlock()
	if err := s.save(); err != nil {
		s.mu.Lock()
		s.st.Pending = nil
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrState, err)
	}
	return nil
}

// stepFunc reports one step of an operation: it updates the operation's
// status, logs the step and emits an Event. d is the step's duration, 0 for
// a progress note.
type stepFunc func(step, msg string, d time.Duration)

// acquire takes the operation lock, or returns ErrBusy naming the operation
// that holds it. The caller must call release.
func (s *Switcher) acquire() (release func(), err error) {
	if !s.op.TryLock() {
		s.mu.Lock()
		cur := s.current
		s.mu.Unlock()
		if cur != nil {
			return nil, fmt.Errorf("%w: %s to %s started %s ago (step %s)", ErrBusy, cur.Kind, cur.To,
				time.Since(cur.Started).Round(time.Millisecond), cur.Step)
		}
		return nil, ErrBusy
	}
	return s.op.Unlock, nil
}

// begin publishes a running operation for status and returns the step
// function that reports its steps to emit (which may be nil). end clears the
// operation.
func (s *Switcher) begin(kind, id string, to Color, started time.Time, emit func(Event)) (ev stepFunc, end func()) {
	if emit == nil {
		emit = func(Event) {}
	}
	op := &Operation{ID: id, Kind: kind, To: to.String(), Started: started, Step: "start"}
	s.mu.Lock()
	s.current = op
	s.events = nil
	s.mu.Unlock()
	ev = func(step, msg string, d time.Duration) {
		e := Event{Time: time.Now().UTC(), Step: step, Message: msg}
		if d > 0 {
			e.DurationMS = float64(d.Microseconds()) / 1000
		}
		s.mu.Lock()
		op.Step = step
		s.addEvent(e)
		s.mu.Unlock()
		s.logger.Info(kind+" "+step, "id", id, "msg", msg, "duration", d)
		emit(e)
	}
	end = func() {
		s.mu.Lock()
		s.current = nil
		s.mu.Unlock()
	}
	return ev, end
}

// maxStatusEvents bounds the steps Status keeps of one operation (a long
// canary reports a step per judgement).
const maxStatusEvents = 100

// addEvent keeps e among the steps Status shows, dropping the oldest
// beyond maxStatusEvents but the first (the "start" that says what the
// operation is). s.mu is held.
func (s *Switcher) addEvent(e Event) {
	if len(s.events) >= maxStatusEvents {
		s.events = append(s.events[:1], s.events[2:]...)
	}
	s.events = append(s.events, e)
}

// handOver moves traffic from res.From to res.To once res.To is healthy:
// swap the route, persist the state, drain res.From and close its idle
// connections. It runs to the end, ctx should not be cancellable, unless
// abort is closed (the new instance died): then it stops draining at once
// and returns true, leaving res.From's connections as they are so that the
// caller can route back to it.
func (s *Switcher) handOver(ctx context.Context, res *Result, ev stepFunc, abort <-chan struct{}) (aborted bool) {
	from, to := res.From, res.To
	t := time.Now()
	s.router.Route(to)
	res.Drained = s.router.InFlight(from)
	s.mu.Lock()
	s.live = to
	s.st.Live = to.String()
	prev := &state.Previous{Color: from.String()}
	if inst, ok := s.st.Instances[from.String()]; ok {
		prev.Instance = &inst
	}
	s.st.Previous = prev
	s.mu.Unlock()
	ev("swap", fmt.Sprintf("%s is live; %d request(s) in flight on %s", to, res.Drained, from), time.Since(t))
	s.cfg.Observer.Live(to, s.appVersion(to))

	t = time.Now()
	if err := s.save(); err != nil {
		// Traffic already moved; a failed write must not undo that, but
		// the operator has to know the next restart would pick the old colour.
		w := fmt.Sprintf("could not save the state after the swap (%v): until a save succeeds, a restart of baton would route to %s", err, from)
		res.Warnings = append(res.Warnings, w)
		ev("persist", w, time.Since(t))
	} else {
		ev("persist", "saved live="+to.String(), time.Since(t))
	}

	t = time.Now()
	res.Abandoned, aborted = s.drain(ctx, from, ev, abort)
	res.DrainDuration = time.Since(t)
	switch {
	case aborted:
		ev("drain", fmt.Sprintf("stopped draining %s: the new instance on %s is gone", from, to), time.Since(t))
		return true
	case res.Abandoned > 0:
		ev("drain", fmt.Sprintf("drain deadline %s passed with %d request(s) still in flight on %s", s.cfg.DrainTimeout, res.Abandoned, from), time.Since(t))
	default:
		ev("drain", fmt.Sprintf("%s drained", from), time.Since(t))
	}
	s.router.CloseIdle(from)
	return false
}

// stopOld stops the app of colour c after its drain, unless NoStop is set:
// through the launcher that started it if baton did, else by its address
// (Stopper). It returns what it did; a failure to stop is reported, not
// returned, because traffic has already moved.
func (s *Switcher) stopOld(ctx context.Context, c Color, ev stepFunc) string {
	if s.cfg.NoStop {
		ev("stop", fmt.Sprintf("left %s (%s) running (--no-stop)", c, s.cfg.Addrs[c]), 0)
		return ""
	}
	t := time.Now()
	var (
		desc string
		err  error
	)
	if p := s.process(c); p != nil {
		desc, err = p.Stop(ctx, syscall.SIGTERM, s.cfg.StopTimeout)
	} else {
		desc, err = s.stopper.Stop(ctx, s.cfg.Addrs[c], s.cfg.StopTimeout)
	}
	if err != nil {
		// The switch itself succeeded; report the leftover process.
		desc = "could not stop old app: " + err.Error()
	} else {
		s.forget(c)
	}
	ev("stop", desc, time.Since(t))
	return desc
}

// waitHealthy polls the target until HealthPasses checks pass in a row.
func (s *Switcher) waitHealthy(ctx context.Context, c Color, ev func(string, string, time.Duration)) error {
	addr := s.cfg.Addrs[c]
	start := time.Now()
	deadline := start.Add(s.cfg.HealthDeadline)
	passes, tries := 0, 0
	var last error
	for {
		tries++
		t := time.Now()
		err := s.prober.Check(ctx, addr)
		if ctx.Err() != nil {
			return fmt.Errorf("%w: cancelled after %d tries in %s", ErrHealth, tries, time.Since(start).Round(time.Millisecond))
		}
		s.cfg.Observer.HealthCheck(c, err, time.Since(t))
		if err == nil {
			passes++
			ev("health", fmt.Sprintf("try %d: ok (%d/%d passes)", tries, passes, s.cfg.HealthPasses), time.Since(t))
			if passes >= s.cfg.HealthPasses {
				// Status shows it healthy now, not after the monitor's
				// next round.
				s.setHealth(c, nil)
				return nil
			}
		} else {
			if passes > 0 || tries == 1 || tries%5 == 0 {
				ev("health", fmt.Sprintf("try %d: %v", tries, err), time.Since(t))
			}
			passes = 0
			last = err
		}
		// Once a check passes, the app is up: the confirming checks follow
		// closely, since they only guard against an app that dies right
		// after binding. Waiting a full interval for each would add
		// (passes-1)*interval to every deploy's reaction time.
		wait := s.cfg.HealthInterval
		if passes > 0 {
			wait = min(wait, ConfirmInterval)
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%w: %d/%d passes after %d tries in %s: last error: %v", ErrHealth,
				passes, s.cfg.HealthPasses, tries, time.Since(start).Round(time.Millisecond), last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: cancelled after %d tries", ErrHealth, tries)
		case <-time.After(wait):
		}
	}
}

// drain waits for c's in-flight count to reach zero or the drain deadline,
// reporting progress each second. It returns how many were left, and
// whether it stopped early because abort was closed (a nil abort never is).
func (s *Switcher) drain(ctx context.Context, c Color, ev stepFunc, abort <-chan struct{}) (left int64, aborted bool) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	report := time.Now().Add(time.Second)
	for {
		n := s.router.InFlight(c)
		if n == 0 {
			return 0, false
		}
		if time.Now().After(report) {
			ev("drain", fmt.Sprintf("draining %s: %d request(s) in flight", c, n), 0)
			report = report.Add(time.Second)
		}
		select {
		case <-ctx.Done():
			left := s.router.InFlight(c)
			s.endStreams(parent, c, ev)
			return left, false
		case <-abort:
			return s.router.InFlight(c), true
		case <-poll.C:
		}
	}
}

// endStreams ends c's long-lived streams, if the router can, once the
// drain deadline has passed, and reports how many it ended.
func (s *Switcher) endStreams(ctx context.Context, c Color, ev stepFunc) {
	se, ok := s.router.(StreamEnder)
	if !ok {
		return
	}
	t := time.Now()
	ctx, cancel := context.WithTimeout(ctx, StreamEndTimeout)
	defer cancel()
	if n := se.EndStreams(ctx, c); n > 0 {
		ev("drain", fmt.Sprintf("drain deadline %s passed: ended %d WebSocket or event stream(s) on %s (close 1001 going away, end of stream)", s.cfg.DrainTimeout, n, c), time.Since(t))
	}
}

// record ends an operation: it moves it from pending to the history,
// saves the state and tells the observer. A failed save becomes a warning
// on res.
func (s *Switcher) record(kind, version string, res *Result, started time.Time, err error) {
	d := state.Deploy{
		ID: res.ID, Kind: kind, Version: version, From: res.From.String(), To: res.To.String(),
		Started: started.UTC(), Duration: time.Since(started), OK: err == nil, Drained: res.Drained,
		DrainDuration: res.DrainDuration, Abandoned: res.Abandoned,
	}
	if err != nil {
		d.Error = err.Error()
	}
	s.mu.Lock()
	s.st.Pending = nil
	s.st.History = appendHistory(s.st.History, d)
	s.mu.Unlock()
	if serr := s.save(); serr != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("could not save the state after the %s (%v): a restart of baton would report it as interrupted", kind, serr))
	}
	s.cfg.Observer.SwitchDone(*res, err)
}

// save writes the state. Its outcome shows in Status until the next save.
func (s *Switcher) save() error {
	s.mu.Lock()
	st := s.st
	st.Updated = time.Now().UTC()
	st.History = append([]state.Deploy(nil), s.st.History...)
	st.Instances = maps.Clone(s.st.Instances)
	s.mu.Unlock()
	err := s.store.Save(st)
	s.mu.Lock()
	s.stateErr = ""
	if err != nil {
		s.stateErr = err.Error()
	}
	s.mu.Unlock()
	if err != nil {
		s.logger.Error("could not save state", "err", err)
	}
	return err
}

// Monitor checks both colours every MonitorEvery until ctx is done, so that
// status can show each app's health. Run it in its own goroutine.
func (s *Switcher) Monitor(ctx context.Context) {
	t := time.NewTicker(s.cfg.MonitorEvery)
	defer t.Stop()
	for {
		for _, c := range Colors {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.MonitorEvery)
			t0 := time.Now()
			err := s.prober.Check(cctx, s.cfg.Addrs[c])
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.cfg.Observer.HealthCheck(c, err, time.Since(t0))
			if err != nil && s.wentDown(c) {
				err = s.explainDown(ctx, c, err)
			}
			s.setHealth(c, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// wentDown reports whether c was healthy (or never checked) before a
// failing check: the moment to look at why, once, rather than every second.
func (s *Switcher) wentDown(c Color) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.health[c].checkedOK || s.health[c].Healthy
}

// explainDown adds to a failed health check of c whether the instance baton
// launched or adopted there has exited (e.g. while baton itself was down),
// so that status says so instead of only "connection refused".
func (s *Switcher) explainDown(ctx context.Context, c Color, err error) error {
	p := s.process(c)
	if p == nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if alive, aerr := p.Alive(actx); aerr == nil && !alive {
		return fmt.Errorf("%w; its instance (%s) has exited", err, p)
	}
	return err
}

func (s *Switcher) setHealth(c Color, err error) {
	now := time.Now().UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &s.health[c]
	healthy := err == nil
	if !h.checkedOK || h.Healthy != healthy {
		h.Since = now
		if h.checkedOK || !healthy {
			s.logger.Info("health changed", "color", c, "healthy", healthy, "err", err)
		}
	}
	h.checkedOK = true
	h.Checked = now
	h.Healthy = healthy
	h.Error = ""
	if err != nil {
		h.Error = err.Error()
	}
}

// UpstreamStatus is one colour's part of Status.
type UpstreamStatus struct {
	Color    string  `json:"color"`
	Addr     string  `json:"addr"`
	Live     bool    `json:"live"`
	InFlight int64   `json:"in_flight"`
	Health   *Health `json:"health,omitempty"` // nil until first checked
	// Instance is what baton recorded of the app it launched on this
	// colour; nil if it launched none.
	Instance *state.Instance `json:"instance,omitempty"`
	// Traffic is what this colour answered since it last became live;
	// nil if the Router does not count (see TrafficCounter).
	Traffic *Traffic `json:"traffic,omitempty"`
}

// Status is a snapshot of the switcher for the admin API.
type Status struct {
	Live      string           `json:"live"`
	Upstreams []UpstreamStatus `json:"upstreams"`
	Operation *Operation       `json:"operation,omitempty"`
	History   []state.Deploy   `json:"history"`
	// Previous is what 'baton rollback' would go back to; nil if nothing.
	Previous *state.Previous `json:"previous,omitempty"`
	// StateError is the error of the last attempt to save the state file,
	// empty if it succeeded: while it is set, what baton does now would be
	// forgotten by a restart.
	StateError string `json:"state_error,omitempty"`
	// Rollout is the running canary, or the watch after a switch, deploy
	// or promote; nil if none.
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// Events are the steps of the running operation, or of the last one
	// since baton started (not kept across restarts), as the CLI printed
	// them.
	Events []Event `json:"events,omitempty"`
}

// Status returns a snapshot.
func (s *Switcher) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Live: s.live.String(), History: append([]state.Deploy{}, s.st.History...), Previous: s.st.Previous, StateError: s.stateErr,
		Events: slices.Clone(s.events)}
	tc, _ := s.router.(TrafficCounter)
	for _, c := range Colors {
		us := UpstreamStatus{Color: c.String(), Addr: s.cfg.Addrs[c], Live: c == s.live, InFlight: s.router.InFlight(c)}
		if inst, ok := s.st.Instances[c.String()]; ok {
			us.Instance = &inst
		}
		if tc != nil {
			if tr := tc.Traffic(c); !tr.Since.IsZero() {
				us.Traffic = &tr
			}
		}
		if s.health[c].checkedOK {
			h := s.health[c]
			us.Health = &h
		}
		st.Upstreams = append(st.Upstreams, us)
	}
	if s.current != nil {
		op := *s.current
		st.Operation = &op
	}
	st.Rollout = s.rolloutStatus()
	return st
}

func newID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}
