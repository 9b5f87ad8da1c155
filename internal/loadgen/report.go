package loadgen

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Failure classes, as counted by Report.FailuresByKind.
const (
	ClassReset     = "reset"      // connection reset or broken pipe
	ClassEOF       = "eof"        // connection closed before the answer was complete
	ClassRefused   = "refused"    // connection refused
	ClassTimeout   = "timeout"    // the request's deadline passed
	ClassStatus5xx = "status_5xx" // answered with a 5xx status
	ClassStatus4xx = "status_4xx" // answered with a 4xx status
	ClassOther     = "other"      // anything else, including a wrong /echo count
)

// Result is the outcome of one request.
type Result struct {
	// Start is when the request began, before dialling if it dialled.
	Start time.Time
	// Duration runs from Start to the end of the answer's body, or to the
	// failure.
	Duration time.Duration
	// Status is the answer's status code, 0 if there was no answer.
	Status int
	// Version is the version that answered: the Config.VersionHeader
	// header (X-App-Version by default), or the body's first word with
	// Config.VersionFromBody.
	Version string
	// Err describes a failure other than a status code; empty if none.
	Err string
	// Kind is the request kind: KindKeepAlive, KindNewConn, KindSlow or
	// KindPost.
	Kind string
	// Class is the failure class (one of the Class constants), empty on
	// success.
	Class string
	// Reused reports whether the request went on a connection that had
	// already carried a request: the case other clients retry silently.
	Reused bool
}

// OK reports whether r succeeded: no error and a 2xx status.
func (r Result) OK() bool {
	return r.Err == "" && r.Status >= 200 && r.Status < 300
}

// FailureClass returns r's failure class, or "" if r succeeded. It uses
// r.Class when set and otherwise derives it from Status.
func (r Result) FailureClass() string {
	switch {
	case r.OK():
		return ""
	case r.Class != "":
		return r.Class
	case r.Err != "":
		return ClassOther
	default:
		return statusClass(r.Status)
	}
}

// Report is the outcome of a Run. Its methods only read it; they are safe
// for concurrent use as long as nobody modifies it.
type Report struct {
	// Results holds every request attempted, in order of Start.
	Results []Result
	// Start and End bound the run.
	Start, End time.Time
	// Skipped is the number of scheduled requests dropped because every
	// worker was busy and the schedule had fallen more than 100ms behind: a
	// sign the target (or the client) could not keep up with Rate.
	Skipped int
	// Conns is the number of TCP connections opened.
	Conns int
	// Err is set, and Results empty, when the run could not start.
	Err error
}

// Total returns the number of requests attempted.
func (rep *Report) Total() int { return len(rep.Results) }

// Failures returns the requests that failed: an error, or a status other
// than 2xx.
func (rep *Report) Failures() []Result {
	var out []Result
	for _, r := range rep.Results {
		if !r.OK() {
			out = append(out, r)
		}
	}
	return out
}

// FailuresByKind counts failures by class (ClassReset, ClassEOF, ...).
func (rep *Report) FailuresByKind() map[string]int {
	m := map[string]int{}
	for _, r := range rep.Results {
		if c := r.FailureClass(); c != "" {
			m[c]++
		}
	}
	return m
}

// LongestGap returns the longest stretch of time without a successful
// response completing while the load was being sent, from the first
// request's start to the last request's start. The tail after the last
// request was sent is left out: only requests already in flight (slow ones)
// can answer then, so a quiet tail is not an outage. It is the whole span,
// to the last request's end, if nothing succeeded, and 0 if nothing ran.
func (rep *Report) LongestGap() time.Duration {
	from, to := rep.LongestGapWindow()
	return to.Sub(from)
}

// LongestGapWindow returns where the LongestGap lies: from the end of a
// successful response (or the first start) to the end of the next one (or
// the last start).
func (rep *Report) LongestGapWindow() (from, to time.Time) {
	if len(rep.Results) == 0 {
		return
	}
	first, lastStart, lastEnd := rep.Results[0].Start, rep.Results[0].Start, rep.Results[0].Start
	var done []time.Time
	for _, r := range rep.Results {
		end := r.Start.Add(r.Duration)
		if r.Start.Before(first) {
			first = r.Start
		}
		if r.Start.After(lastStart) {
			lastStart = r.Start
		}
		if end.After(lastEnd) {
			lastEnd = end
		}
		if r.OK() {
			done = append(done, end)
		}
	}
	if len(done) == 0 {
		return first, lastEnd
	}
	slices.SortFunc(done, time.Time.Compare)
	prev := first
	from, to = first, first
	for _, t := range append(done, lastStart) {
		if t.After(lastStart) {
			t = lastStart
		}
		if t.Sub(prev) > to.Sub(from) {
			from, to = prev, t
		}
		if t.After(prev) {
			prev = t
		}
	}
	return from, to
}

// Percentile returns the p-th percentile (p a percentage: 50, 99, 99.9) of
// the durations of successful requests of every kind, by the nearest-rank
// method; 0 if none succeeded.
func (rep *Report) Percentile(p float64) time.Duration {
	return rep.PercentileKind("", p)
}

// PercentileKind is Percentile over the successful requests of one kind
// (KindKeepAlive, ...); kind "" means all kinds.
func (rep *Report) PercentileKind(kind string, p float64) time.Duration {
	return percentile(rep.okDurations(kind), p)
}

// okDurations returns the sorted durations of the successful requests of
// kind ("" for all).
func (rep *Report) okDurations(kind string) []time.Duration {
	var d []time.Duration
	for _, r := range rep.Results {
		if r.OK() && (kind == "" || r.Kind == kind) {
			d = append(d, r.Duration)
		}
	}
	slices.Sort(d)
	return d
}

// percentile returns the p-th percentile of sorted by nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// FirstSeen returns the start time of the first successful request answered
// by version, and false if there was none.
func (rep *Report) FirstSeen(version string) (time.Time, bool) {
	var t time.Time
	found := false
	for _, r := range rep.Results {
		if r.OK() && r.Version == version && (!found || r.Start.Before(t)) {
			t, found = r.Start, true
		}
	}
	return t, found
}

// LastSeen returns the start time of the last successful request answered
// by version, and false if there was none.
func (rep *Report) LastSeen(version string) (time.Time, bool) {
	var t time.Time
	found := false
	for _, r := range rep.Results {
		if r.OK() && r.Version == version && (!found || r.Start.After(t)) {
			t, found = r.Start, true
		}
	}
	return t, found
}

// Versions returns the versions that answered successful requests, in order
// of first appearance.
func (rep *Report) Versions() []string {
	first := map[string]time.Time{}
	for _, r := range rep.Results {
		if !r.OK() {
			continue
		}
		if t, ok := first[r.Version]; !ok || r.Start.Before(t) {
			first[r.Version] = r.Start
		}
	}
	vs := make([]string, 0, len(first))
	for v := range first {
		vs = append(vs, v)
	}
	slices.SortFunc(vs, func(a, b string) int {
		if c := first[a].Compare(first[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return vs
}

// Summary returns a multi-line human-readable summary: counts, failures by
// class and by kind, latency of successful requests, the longest gap, and
// the versions seen with their first and last times (relative to the
// start of the run).
func (rep *Report) Summary() string {
	var b strings.Builder
	if rep.Err != nil {
		fmt.Fprintf(&b, "%v\n", rep.Err)
		return b.String()
	}
	failures := rep.Failures()
	elapsed := rep.End.Sub(rep.Start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(rep.Total()) / elapsed.Seconds()
	}
	fmt.Fprintf(&b, "requests: %d in %v (%.1f/s), %d ok, %d failed, %d skipped, %d connections\n",
		rep.Total(), round(elapsed), rate, rep.Total()-len(failures), len(failures), rep.Skipped, rep.Conns)

	if len(failures) > 0 {
		byClass := rep.FailuresByKind()
		var parts []string
		for _, c := range sortedKeys(byClass) {
			parts = append(parts, fmt.Sprintf("%s %d", c, byClass[c]))
		}
		fmt.Fprintf(&b, "failures: %s (first: %s)\n", strings.Join(parts, ", "), describe(failures[0]))
	}

	total, failed := map[string]int{}, map[string]int{}
	for _, r := range rep.Results {
		total[r.Kind]++
		if !r.OK() {
			failed[r.Kind]++
		}
	}
	var parts []string
	for _, k := range sortedKeys(total) {
		part := fmt.Sprintf("%s %d", k, total[k])
		if failed[k] > 0 {
			part += fmt.Sprintf(" (%d failed)", failed[k])
		}
		parts = append(parts, part)
	}
	fmt.Fprintf(&b, "by kind: %s\n", strings.Join(parts, ", "))

	if all := rep.okDurations(""); len(all) > 0 {
		fmt.Fprintf(&b, "latency ok: p50 %v p99 %v max %v\n",
			round(percentile(all, 50)), round(percentile(all, 99)), round(percentile(all, 100)))
	} else {
		fmt.Fprintf(&b, "latency ok: no successful request\n")
	}
	for _, k := range sortedKeys(total) {
		d := rep.okDurations(k)
		if len(d) == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-9s p50 %v p99 %v max %v\n",
			k, round(percentile(d, 50)), round(percentile(d, 99)), round(percentile(d, 100)))
	}
	fmt.Fprintf(&b, "longest gap without a success: %v\n", round(rep.LongestGap()))

	count := map[string]int{}
	for _, r := range rep.Results {
		if r.OK() {
			count[r.Version]++
		}
	}
	for _, v := range rep.Versions() {
		first, _ := rep.FirstSeen(v)
		last, _ := rep.LastSeen(v)
		name := v
		if name == "" {
			name = `""`
		}
		fmt.Fprintf(&b, "version %s: %d ok, first +%v, last +%v\n",
			name, count[v], round(first.Sub(rep.Start)), round(last.Sub(rep.Start)))
	}
	return b.String()
}

func describe(r Result) string {
	if r.Err != "" {
		return fmt.Sprintf("%s %s", r.Kind, r.Err)
	}
	return fmt.Sprintf("%s status %d", r.Kind, r.Status)
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// round shortens d for display.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// statusClass classifies a status code: "" for 2xx.
func statusClass(status int) string {
	switch status / 100 {
	case 2:
		return ""
	case 4:
		return ClassStatus4xx
	case 5:
		return ClassStatus5xx
	default:
		return ClassOther
	}
}

// classify maps a transport error to a failure class.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return ClassReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ClassEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	default:
		return ClassOther
	}
}
