// Package probe measures what a user of an app sees while it is deployed:
// it sends a steady load at a URL, records every request (start, duration,
// status, error, the version that answered), and judges the run.
//
// The model: Start begins sending at a fixed rate with a mix of keep-alive
// and new-connection requests (and, if asked, slow requests and POSTs),
// through internal/loadgen, a client that never retries, so every failure
// the app's users would see is counted. Stop ends the load, waits for the
// requests in flight, and returns a Report. A Report prints a summary a CI
// job can gate on (Verdict), a JSON form of it, and a timeline plot (SVG or
// PNG) on which a person sees at a glance whether the deploy was clean.
//
// Marks are moments the probe cannot see by itself, such as switches; give
// them with Probe.Mark or Report.Marks to have them in the summary and plot.
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/internal/loadgen"
)

// Defaults for Config.
const (
	DefaultRate            = 100
	DefaultKeepAliveConns  = 8
	DefaultNewConnFraction = 0.1
)

// Config describes a probe. URL is required; zero values of the others take
// the defaults named on them.
type Config struct {
	// URL is the http:// or https:// URL to GET; its path and query are
	// those of keep-alive and new-connection requests.
	URL string
	// Connect, if set, is the host:port to connect to instead of the URL's
	// host (which is still sent as Host and used for TLS), like curl's
	// --connect-to.
	Connect string
	// Rate is requests per second; 0 means DefaultRate.
	Rate int
	// KeepAliveConns is the number of keep-alive connections; 0 means
	// DefaultKeepAliveConns.
	KeepAliveConns int
	// NewConnFraction is the fraction of requests sent on a new connection;
	// negative means none, 0 means DefaultNewConnFraction.
	NewConnFraction float64
	// SlowFraction is the fraction of slow requests, GET SlowPath?ms=X with
	// X in [SlowMin, SlowMax] (the sample app's /slow).
	SlowFraction     float64
	SlowMin, SlowMax time.Duration
	SlowPath         string
	// PostFraction is the fraction of POSTs of 1-16 KiB to PostPath; with
	// CheckEcho the answer must be the sample app's /echo count.
	PostFraction float64
	PostPath     string
	CheckEcho    bool
	// VersionHeader names the response header carrying the app's version;
	// empty means X-App-Version. With VersionFromBody, an answer without
	// it has its version read from the first word of its body.
	VersionHeader   string
	VersionFromBody bool
	// Timeout bounds each request; 0 means loadgen.DefaultTimeout.
	Timeout time.Duration
	// TLS is the TLS configuration for https URLs; nil means the system's
	// roots. ServerName defaults to the URL's host name.
	TLS *tls.Config
}

// loadConfig turns c into a loadgen configuration.
func (c Config) loadConfig() (loadgen.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return loadgen.Config{}, fmt.Errorf("probe URL %q: %w", c.URL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return loadgen.Config{}, fmt.Errorf("probe URL %q: want http://host[:port]/path or https://host[:port]/path", c.URL)
	}
	if u.User != nil {
		return loadgen.Config{}, fmt.Errorf("probe URL %q: credentials in the URL are not supported", u.Redacted())
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return loadgen.Config{}, fmt.Errorf("probe URL %q: port %q: want 1-65535", c.URL, port)
	}
	lc := loadgen.Config{
		Target:          net.JoinHostPort(u.Hostname(), port),
		Host:            u.Host,
		Rate:            c.Rate,
		KeepAliveConns:  c.KeepAliveConns,
		NewConnFraction: c.NewConnFraction,
		SlowFraction:    c.SlowFraction,
		SlowMin:         c.SlowMin,
		SlowMax:         c.SlowMax,
		PostFraction:    c.PostFraction,
		Path:            u.RequestURI(),
		Timeout:         c.Timeout,
		SlowPath:        c.SlowPath,
		PostPath:        c.PostPath,
		SkipEchoCheck:   !c.CheckEcho,
		VersionHeader:   c.VersionHeader,
		VersionFromBody: c.VersionFromBody,
	}
	if c.Connect != "" {
		lc.Target = c.Connect
	}
	if lc.Rate == 0 {
		lc.Rate = DefaultRate
	}
	if lc.KeepAliveConns == 0 {
		lc.KeepAliveConns = DefaultKeepAliveConns
	}
	switch {
	case c.NewConnFraction == 0:
		lc.NewConnFraction = DefaultNewConnFraction
	case c.NewConnFraction < 0:
		lc.NewConnFraction = 0
	}
	if u.Scheme == "https" {
		tc := &tls.Config{}
		if c.TLS != nil {
			tc = c.TLS.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		lc.TLS = tc
	}
	if err := lc.Validate(); err != nil {
		return loadgen.Config{}, fmt.Errorf("probe: %w", err)
	}
	return lc, nil
}

// Validate reports what is wrong with c, or nil.
func (c Config) Validate() error {
	_, err := c.loadConfig()
	return err
}

// Mark is a moment or span the probe should show, such as a switch.
type Mark struct {
	// Start and End bound the operation; End zero means a moment.
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	// At is the decisive moment inside it, such as the swap; zero if not
	// known.
	At time.Time `json:"at,omitzero"`
	// Label names it, e.g. "switch blue→green".
	Label string `json:"label"`
	// Failed marks an operation that failed.
	Failed bool `json:"failed,omitempty"`
}

// Probe is a running probe. Create it with Start; its methods are safe for
// concurrent use.
type Probe struct {
	url    string
	cancel context.CancelFunc
	done   chan *loadgen.Report
	once   sync.Once
	rep    *Report

	mu    sync.Mutex
	marks []Mark
}

// Start validates cfg and starts sending requests. The probe runs until Stop
// is called or ctx is done; either way, Stop returns the report.
func Start(ctx context.Context, cfg Config) (*Probe, error) {
	lc, err := cfg.loadConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Probe{url: cfg.URL, cancel: cancel, done: make(chan *loadgen.Report, 1)}
	go func() { p.done <- loadgen.Run(ctx, lc) }()
	return p, nil
}

// Mark records m for the report.
func (p *Probe) Mark(m Mark) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.marks = append(p.marks, m)
}

// Stop stops sending, waits for the requests in flight (each within its
// own timeout) and returns the report. Later calls return the same report.
func (p *Probe) Stop() *Report {
	p.once.Do(func() {
		p.cancel()
		lr := <-p.done
		p.mu.Lock()
		marks := append([]Mark(nil), p.marks...)
		p.mu.Unlock()
		p.rep = &Report{Report: lr, URL: p.url, Marks: marks}
	})
	return p.rep
}

// Run probes for d (until ctx is done if d is 0) and returns the report.
func Run(ctx context.Context, cfg Config, d time.Duration) (*Report, error) {
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	} else if ctx.Done() == nil {
		return nil, errors.New("probe: no duration and a context that is never done")
	}
	p, err := Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	<-ctx.Done()
	return p.Stop(), nil
}

// Report is the outcome of a probe: every request, plus the marks. Its
// methods only read it.
type Report struct {
	*loadgen.Report
	// URL is the probed URL.
	URL string
	// Marks are the switches (or other moments) to show, in any order.
	Marks []Mark
}

// Verdict is what a CI job gates on.
type Verdict struct {
	Pass        bool `json:"pass"`
	Failures    int  `json:"failures"`
	MaxFailures int  `json:"max_failures"`
}

// Verdict passes when at most maxFailures requests failed and at least one
// request succeeded.
func (r *Report) Verdict(maxFailures int) Verdict {
	f := len(r.Failures())
	return Verdict{Pass: f <= maxFailures && r.Total() > f, Failures: f, MaxFailures: maxFailures}
}

func (v Verdict) String() string {
	if v.Pass {
		return fmt.Sprintf("PASS: %d failed request(s), at most %d allowed", v.Failures, v.MaxFailures)
	}
	if v.Failures == 0 {
		return "FAIL: no successful request"
	}
	return fmt.Sprintf("FAIL: %d failed request(s), at most %d allowed", v.Failures, v.MaxFailures)
}

// Summary returns the human summary: counts, failures by kind, latency, the
// longest window without a success, when each version first and last
// answered, the marks, and the verdict.
func (r *Report) Summary(maxFailures int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "probe %s\n", r.URL)
	b.WriteString(r.Report.Summary())
	for _, m := range r.sortedMarks() {
		fmt.Fprintf(&b, "%s: +%v", m.Label, rel(m.Start, r.Start))
		if !m.End.IsZero() {
			fmt.Fprintf(&b, " to +%v", rel(m.End, r.Start))
		}
		if !m.At.IsZero() {
			fmt.Fprintf(&b, ", swap at +%v", rel(m.At, r.Start))
		}
		if m.Failed {
			b.WriteString(" (failed)")
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "verdict: %s\n", r.Verdict(maxFailures))
	return b.String()
}

// JSONSummary is the machine-readable summary. Times relative to the start
// of the probe are in milliseconds.
type JSONSummary struct {
	URL            string         `json:"url"`
	Start          time.Time      `json:"start"`
	DurationMS     float64        `json:"duration_ms"`
	Requests       int            `json:"requests"`
	OK             int            `json:"ok"`
	Failed         int            `json:"failed"`
	Skipped        int            `json:"skipped"`
	Connections    int            `json:"connections"`
	FailuresByKind map[string]int `json:"failures_by_kind"`
	LongestGapMS   float64        `json:"longest_gap_ms"`
	P50MS          float64        `json:"p50_ms"`
	P99MS          float64        `json:"p99_ms"`
	MaxMS          float64        `json:"max_ms"`
	Versions       []VersionSeen  `json:"versions"`
	Marks          []Mark         `json:"marks,omitempty"`
	Verdict        Verdict        `json:"verdict"`
}

// VersionSeen says when a version answered.
type VersionSeen struct {
	Version string  `json:"version"`
	OK      int     `json:"ok"`
	FirstMS float64 `json:"first_ms"`
	LastMS  float64 `json:"last_ms"`
}

// JSON returns the summary in machine-readable form.
func (r *Report) JSON(maxFailures int) JSONSummary {
	s := JSONSummary{
		URL: r.URL, Start: r.Start, DurationMS: ms(r.End.Sub(r.Start)),
		Requests: r.Total(), Failed: len(r.Failures()), Skipped: r.Skipped, Connections: r.Conns,
		FailuresByKind: r.FailuresByKind(),
		LongestGapMS:   ms(r.LongestGap()),
		P50MS:          ms(r.Percentile(50)), P99MS: ms(r.Percentile(99)), MaxMS: ms(r.Percentile(100)),
		Marks:   r.sortedMarks(),
		Verdict: r.Verdict(maxFailures),
	}
	s.OK = s.Requests - s.Failed
	count := map[string]int{}
	for _, res := range r.Results {
		if res.OK() {
			count[res.Version]++
		}
	}
	for _, v := range r.Versions() {
		first, _ := r.FirstSeen(v)
		last, _ := r.LastSeen(v)
		s.Versions = append(s.Versions, VersionSeen{Version: v, OK: count[v], FirstMS: ms(first.Sub(r.Start)), LastMS: ms(last.Sub(r.Start))})
	}
	return s
}

func (r *Report) sortedMarks() []Mark {
	m := slices.Clone(r.Marks)
	slices.SortStableFunc(m, func(a, b Mark) int { return a.Start.Compare(b.Start) })
	return m
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rel is t's offset from start, rounded for display.
func rel(t, start time.Time) time.Duration { return t.Sub(start).Round(time.Millisecond) }
