package switcher

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// Defaults for Thresholds and the judge.
const (
	// DefaultMinRequests is how many answers the new version must have
	// given in the window before the judge says anything about it.
	DefaultMinRequests = 100
	// DefaultJudgeWindow is how far back the judge looks.
	DefaultJudgeWindow = time.Minute
	// DefaultJudgeEvery is how often the judge looks.
	DefaultJudgeEvery = time.Second
	// ErrorRateMargin and LatencyMargin keep the relative rules from
	// firing on noise: the new version fails on errors only if its 5xx
	// share is more than twice the old one's AND more than ErrorRateMargin
	// above it; on latency only if its p99 is more than twice the old
	// one's AND more than LatencyMargin above it.
	ErrorRateMargin = 0.01
	LatencyMargin   = 100 * time.Millisecond
	// MinLatencySamples is how many answers in the window the judge needs
	// before it judges the p99 (from the new version, and from the old one
	// for a comparison): with fewer, one or two slow requests decide it.
	MinLatencySamples = 1000
)

// Reasons for a rollback, as reported in errors, events and metrics.
const (
	ReasonErrorRate = "error_rate" // too many 5xx answers
	ReasonLatency   = "latency"    // p99 too high
	ReasonExited    = "exited"     // the new instance exited
	ReasonCommand   = "command"    // an operator asked for it
)

// Thresholds decide when a new version is worse than the old one. The zero
// value judges the new version against the old one with the rules of
// ErrorRateMargin and LatencyMargin, after DefaultMinRequests answers, over
// DefaultJudgeWindow.
type Thresholds struct {
	// MaxErrorRate is the highest share (0-1) of 5xx answers the new
	// version may give. Zero means relative to the old version (which,
	// when it has too few answers to tell, counts as 0%: then more than
	// 1% fails). Either way the new version fails only when its count is
	// significantly over the limit (3 standard deviations), not by chance.
	MaxErrorRate float64
	// MaxP99 is the highest 99th-percentile answer time the new version
	// may have. Zero means relative to the old version; when that has too
	// few answers to tell, latency is not judged. Either way the p99 is
	// judged only from MinLatencySamples answers on.
	MaxP99 time.Duration
	// MinRequests is how many answers the new version must have given in
	// the window before it is judged; 0 means DefaultMinRequests. The old
	// version's numbers count as known with as many.
	MinRequests int
	// Window is how far back the judge looks; 0 means DefaultJudgeWindow.
	Window time.Duration
}

func (t Thresholds) minRequests() uint64 {
	if t.MinRequests > 0 {
		return uint64(t.MinRequests)
	}
	return DefaultMinRequests
}

func (t Thresholds) window() time.Duration {
	if t.Window > 0 {
		return t.Window
	}
	return DefaultJudgeWindow
}

func (t Thresholds) validate() error {
	switch {
	case t.MaxErrorRate < 0 || t.MaxErrorRate > 1 || math.IsNaN(t.MaxErrorRate):
		return fmt.Errorf("max error rate %v: want 0-1 (0: relative to the old version)", t.MaxErrorRate)
	case t.MaxP99 < 0:
		return fmt.Errorf("max p99 %s is negative", t.MaxP99)
	case t.MinRequests < 0:
		return fmt.Errorf("min requests %d is negative", t.MinRequests)
	case t.Window < 0:
		return fmt.Errorf("judge window %s is negative", t.Window)
	}
	return nil
}

// nLatencyBuckets latency buckets, each bound 1.1 times the one before,
// from 250µs up to about 3.5 minutes: a p99 read from them is within a few
// per cent, which a fixed --max-p99 needs, and finding one on the request
// path is a binary search of 8 steps.
const nLatencyBuckets = 144

var latencyBounds = func() (b [nLatencyBuckets]time.Duration) {
	d := float64(250 * time.Microsecond)
	for i := range b {
		b[i] = time.Duration(d)
		d *= 1.1
	}
	return b
}()

func latencyBucket(d time.Duration) int {
	lo, hi := 0, nLatencyBuckets-1
	for lo < hi {
		m := (lo + hi) / 2
		if d <= latencyBounds[m] {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// Tally counts the answers of each colour, for the judge of a canary or a
// watch. The proxy's observer feeds it with Record on the request path;
// while no canary or watch runs that costs one atomic load. The zero value
// is ready to use; a Tally is safe for concurrent use.
type Tally struct {
	armed atomic.Int32
	c     [2]tallyColor
}

type tallyColor struct {
	responses atomic.Uint64
	errors    atomic.Uint64
	latency   [nLatencyBuckets]atomic.Uint64
}

// Record counts one answer of colour c with the given status (0: the client
// went away before any, not counted) that took d.
func (t *Tally) Record(c Color, status int, d time.Duration) {
	if t.armed.Load() == 0 || status == 0 || c > Green {
		return
	}
	tc := &t.c[c]
	tc.responses.Add(1)
	if status >= 500 {
		tc.errors.Add(1)
	}
	tc.latency[latencyBucket(d)].Add(1)
}

// Armed reports whether a canary or a watch wants answers counted; the
// caller may skip looking up the colour when it does not.
func (t *Tally) Armed() bool { return t.armed.Load() != 0 }

// arm starts counting; each arm needs a disarm.
func (t *Tally) arm()    { t.armed.Add(1) }
func (t *Tally) disarm() { t.armed.Add(-1) }

func (t *Tally) snapshot(c Color) sample {
	tc := &t.c[c]
	s := sample{responses: tc.responses.Load(), errors: tc.errors.Load()}
	for i := range s.latency {
		s.latency[i] = tc.latency[i].Load()
	}
	return s
}

// sample is a colour's answers: cumulative from a Tally, or the difference
// of two.
type sample struct {
	responses, errors uint64
	latency           [nLatencyBuckets]uint64
}

func (a sample) minus(b sample) sample {
	d := sample{responses: a.responses - b.responses, errors: a.errors - b.errors}
	for i := range d.latency {
		d.latency[i] = a.latency[i] - b.latency[i]
	}
	return d
}

func (a sample) errorRate() float64 {
	if a.responses == 0 {
		return 0
	}
	return float64(a.errors) / float64(a.responses)
}

// quantile returns the q-quantile of the answer times, interpolated
// linearly inside its bucket as Prometheus' histogram_quantile does.
func (a sample) quantile(q float64) time.Duration {
	var n uint64
	for _, c := range a.latency {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var cum uint64
	for i, c := range a.latency {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		lo := time.Duration(0)
		if i > 0 {
			lo = latencyBounds[i-1]
		}
		frac := (rank - float64(cum)) / float64(c)
		return lo + time.Duration(frac*float64(latencyBounds[i]-lo))
	}
	return latencyBounds[nLatencyBuckets-1]
}

func (a sample) summary(c Color) SampleSummary {
	return SampleSummary{Color: c.String(), Responses: a.responses, Errors: a.errors,
		ErrorRate: a.errorRate(), P99MS: float64(a.quantile(0.99).Microseconds()) / 1000}
}

// window keeps a snapshot of a Tally per judge tick, so that the judge can
// look at the answers of the last span only: an app that starts failing
// late in a long canary is not hidden by the good minutes before.
type window struct {
	t     *Tally
	span  time.Duration
	snaps []tallySnap // oldest first; snaps[0] is the base
}

type tallySnap struct {
	at time.Time
	s  [2]sample
}

func newWindow(t *Tally, span time.Duration, now time.Time) *window {
	w := &window{t: t, span: span}
	w.add(now)
	return w
}

// add takes a snapshot and drops those no longer needed: the base is the
// newest snapshot at least span old.
func (w *window) add(now time.Time) {
	w.snaps = append(w.snaps, tallySnap{at: now, s: [2]sample{w.t.snapshot(Blue), w.t.snapshot(Green)}})
	cut := 0
	for i := 1; i < len(w.snaps); i++ {
		if now.Sub(w.snaps[i].at) >= w.span {
			cut = i
		}
	}
	if cut > 0 {
		w.snaps = append(w.snaps[:0], w.snaps[cut:]...)
	}
}

// delta returns colour c's answers between the base and the last snapshot.
func (w *window) delta(c Color) sample {
	return w.snaps[len(w.snaps)-1].s[c].minus(w.snaps[0].s[c])
}

// SampleSummary is what one colour answered in the judge's window.
type SampleSummary struct {
	Color     string  `json:"color"`
	Responses uint64  `json:"responses"`
	Errors    uint64  `json:"errors_5xx"`
	ErrorRate float64 `json:"error_rate"`
	P99MS     float64 `json:"p99_ms"`
}

// Judgement is one look of the judge at the new and the old version.
type Judgement struct {
	Time time.Time     `json:"time"`
	New  SampleSummary `json:"new"`
	// Old is the old version's answers in the same window, or, during a
	// watch after a promote, in the last window of the canary.
	Old SampleSummary `json:"old"`
	// Verdict is "waiting" (too few answers to judge), "ok" or "fail".
	Verdict string `json:"verdict"`
	// Reason, on a fail, is ReasonErrorRate or ReasonLatency.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
}

// judge compares the new colour's answers nw with the old colour's old.
func judge(th Thresholds, newC, oldC Color, nw, old sample, now time.Time) Judgement {
	j := Judgement{Time: now.UTC(), New: nw.summary(newC), Old: old.summary(oldC), Verdict: "ok"}
	minReq := th.minRequests()
	if nw.responses < minReq {
		j.Verdict = "waiting"
		j.Message = fmt.Sprintf("waiting for %d answers from %s in the last %s (has %d)", minReq, newC, th.window(), nw.responses)
		return j
	}
	oldKnown := old.responses >= minReq
	oldDesc := fmt.Sprintf("%s: %.1f%% 5xx, p99 %s over %d", oldC, 100*old.errorRate(), fmtDur(old.quantile(0.99)), old.responses)
	if !oldKnown {
		oldDesc = fmt.Sprintf("%s: too few answers to compare (%d)", oldC, old.responses)
	}

	limit, how := th.MaxErrorRate, "the limit"
	if limit == 0 {
		base := 0.0
		if oldKnown {
			base = old.errorRate()
		}
		limit, how = max(2*base, base+ErrorRateMargin), "twice the old version's and 1 point above it"
	}
	// Over the limit, and not by chance: a version that really gives
	// limit's share of errors stays under the count checked here all but
	// once in a thousand looks.
	if r := nw.errorRate(); r > limit && significant(nw.errors, nw.responses, limit) {
		j.Verdict, j.Reason = "fail", ReasonErrorRate
		j.Message = fmt.Sprintf("%s answered %.1f%% 5xx (%d of %d) in the last %s, over %.1f%% (%s); %s",
			newC, 100*r, nw.errors, nw.responses, th.window(), 100*limit, how, oldDesc)
		return j
	}

	p99 := nw.quantile(0.99)
	var lim time.Duration
	switch {
	case nw.responses < MinLatencySamples:
	case th.MaxP99 > 0:
		lim, how = th.MaxP99, "the limit"
	case old.responses >= MinLatencySamples:
		op := old.quantile(0.99)
		lim, how = max(2*op, op+LatencyMargin), "twice the old version's and 100ms above it"
	}
	if lim > 0 && p99 > lim {
		j.Verdict, j.Reason = "fail", ReasonLatency
		j.Message = fmt.Sprintf("%s's p99 was %s over %d answers in the last %s, over %s (%s); %s",
			newC, fmtDur(p99), nw.responses, th.window(), fmtDur(lim), how, oldDesc)
		return j
	}
	j.Message = fmt.Sprintf("%s: %.1f%% 5xx, p99 %s over %d; %s", newC, 100*nw.errorRate(), fmtDur(p99), nw.responses, oldDesc)
	return j
}

// significant reports whether k errors in n answers are more than a version
// whose true error share is p gives by chance: over 3 standard deviations
// above n·p.
func significant(k, n uint64, p float64) bool {
	mean := float64(n) * p
	return float64(k) > mean+3*math.Sqrt(mean*(1-p))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
