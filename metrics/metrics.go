// Package metrics exports baton's Prometheus metrics on a registry of its own.
//
// The model: one Metrics value is both a proxy.Observer (told about every
// proxied request and every failed upstream round trip, on the request path)
// and a switcher.Observer (told about health checks, switches, deploys and
// the live colour, on the control path). Handler serves the registry in the
// Prometheus text format; cmd mounts it on the admin API and, if asked, on a
// listener of its own.
//
// The request path is kept cheap: a request adds one to a counter in a fixed
// array indexed by colour, method class and status class (an atomic add, no
// map lookup, no label hashing, no allocation) and observes its duration in
// a histogram child resolved per colour when the upstream is tracked. Those
// counters become Prometheus samples only when /metrics is scraped.
//
// Names follow the Prometheus conventions: a baton_ prefix, base units
// (seconds), _total for counters and _info for info-style gauges. Every label
// has a small fixed set of values, so the number of series is bounded
// whatever the traffic.
package metrics

import (
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/switcher"
)

// Label values of baton_http_requests_total. Methods outside the list count
// as "other"; code is the status class, or "none" when no status was written
// (the client went away before the app answered).
var (
	methodClasses = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
	codeClasses   = [...]string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"}
	// errorKinds are the kinds proxy.Observer.UpstreamError reports.
	errorKinds = [...]string{"dial", "reset", "timeout", "canceled", "other"}
)

const (
	nMethods = len(methodClasses)
	nCodes   = len(codeClasses)
	nKinds   = len(errorKinds)
)

// RequestDurationBuckets are the buckets of
// baton_http_request_duration_seconds: from half a millisecond, since apps
// behind baton usually sit on the same host, to a minute for slow uploads.
var RequestDurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// HealthCheckDurationBuckets are the buckets of
// baton_health_check_duration_seconds.
var HealthCheckDurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Options configures New. The zero value is usable.
type Options struct {
	// Version is baton's version, exported as baton_build_info{version}.
	// Empty means "unknown".
	Version string
	// Revision is the VCS revision baton was built from; empty means it
	// is read from the binary's build info, if there.
	Revision string
	// NoRuntimeCollectors leaves out the Go and process collectors, which
	// tests that compare the whole page do not want.
	NoRuntimeCollectors bool
}

// Metrics holds baton's metrics. Create it with New and give it the two
// upstreams with Track before the proxy serves. It is safe for concurrent
// use.
type Metrics struct {
	reg *prometheus.Registry

	// Request path. ups is written by Track before serving and only read
	// afterwards.
	ups      [2]*proxy.Upstream
	requests [2][nMethods][nCodes]atomic.Uint64
	upErrors [2][nKinds]atomic.Uint64
	retries  atomic.Uint64
	duration [2]prometheus.Observer
	durVec   *prometheus.HistogramVec

	// Control path.
	healthChecks  [2][2]prometheus.Counter // [colour][0 fail, 1 pass]
	healthDur     [2]prometheus.Observer
	switches      *prometheus.CounterVec
	deploys       *prometheus.CounterVec
	lastDrain     prometheus.Gauge
	lastDrained   prometheus.Gauge
	lastAbandoned prometheus.Gauge
	lastDuration  prometheus.Gauge
	lastSwitch    prometheus.Gauge

	liveMu      sync.Mutex
	liveColor   string // "" until Live is first called
	liveVersion string

	rollout rolloutMetrics // see rollout.go
}

var (
	_ proxy.Observer              = (*Metrics)(nil)
	_ switcher.Observer           = (*Metrics)(nil)
	_ switcher.LastSwitchObserver = (*Metrics)(nil)
)

// New returns Metrics registered on a new registry, with the Go and process
// collectors unless opts says otherwise.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	if !opts.NoRuntimeCollectors {
		m.reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	version, revision := opts.Version, opts.Revision
	if version == "" {
		version = "unknown"
	}
	if revision == "" {
		revision = vcsRevision()
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "baton_build_info",
		Help:        "Always 1; labels carry baton's version, VCS revision and Go version.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)

	m.durVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "baton_http_request_duration_seconds",
		Help:    "Time from receiving a proxied request to the end of its response, by the colour that served it.",
		Buckets: RequestDurationBuckets,
	}, []string{"color"})
	healthVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_health_checks_total",
		Help: "Health checks of each colour's app, from switches and from the background monitor, by result (pass or fail).",
	}, []string{"color", "result"})
	healthDurVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "baton_health_check_duration_seconds",
		Help:    "Duration of health checks of each colour's app.",
		Buckets: HealthCheckDurationBuckets,
	}, []string{"color"})
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_switches_total",
		Help: "Switches that started, by result (ok or failed). A failed switch left the old colour serving.",
	}, []string{"result"})
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_deploys_total",
		Help: "Deploys that started, by result (ok or failed).",
	}, []string{"result"})
	m.lastDrain = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_last_switch_drain_seconds",
		Help: "How long the last successful switch waited for the old colour's requests in flight to finish.",
	})
	m.lastDrained = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_last_switch_drained_requests",
		Help: "Requests in flight on the old colour right after the last successful switch's swap.",
	})
	m.lastAbandoned = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_last_switch_abandoned_requests",
		Help: "Requests still in flight on the old colour when the last successful switch's drain deadline passed; 0 on a clean drain.",
	})
	m.lastDuration = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_last_switch_duration_seconds",
		Help: "Duration of the last successful switch, health checks to stop of the old app.",
	})
	m.lastSwitch = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "baton_last_switch_timestamp_seconds",
		Help: "Unix time at which the last successful switch finished (restored from the state file at start-up); 0 if none is recorded.",
	})
	m.reg.MustRegister(buildInfo, m.durVec, healthVec, healthDurVec, m.switches, m.deploys,
		m.lastDrain, m.lastDrained, m.lastAbandoned, m.lastDuration, m.lastSwitch, (*hotCollector)(m))
	m.rollout = newRolloutMetrics(m.reg)

	for _, c := range switcher.Colors {
		m.duration[c] = m.durVec.WithLabelValues(c.String())
		m.healthChecks[c][0] = healthVec.WithLabelValues(c.String(), "fail")
		m.healthChecks[c][1] = healthVec.WithLabelValues(c.String(), "pass")
		m.healthDur[c] = healthDurVec.WithLabelValues(c.String())
	}
	// Export the outcomes at zero from the start, so that rate() and
	// alerts see a series before the first switch.
	for _, r := range []string{"ok", "failed"} {
		m.switches.WithLabelValues(r)
		m.deploys.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry the metrics are on, e.g. to add more.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler returns an http.Handler that serves the metrics in the Prometheus
// exposition format (text, or protobuf if the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector that fails must not hide the other metrics.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg, // counts the handler's own errors
		Timeout:       10 * time.Second,
	})
}

// Track tells m that u serves colour c: its requests are counted under
// c, and baton_upstream_in_flight_requests{color=c} reads u.InFlight. Call it
// for both colours before the proxy serves; it is not safe for use
// concurrently with requests. An untracked upstream is matched by its name
// ("blue" or "green"); one with any other name is not counted.
func (m *Metrics) Track(c switcher.Color, u *proxy.Upstream) {
	m.ups[c] = u
}

// colorOf returns u's colour index, or -1.
func (m *Metrics) colorOf(u *proxy.Upstream) int {
	switch {
	case u == m.ups[switcher.Blue]:
		return int(switcher.Blue)
	case u == m.ups[switcher.Green]:
		return int(switcher.Green)
	}
	switch u.Name() {
	case "blue":
		return int(switcher.Blue)
	case "green":
		return int(switcher.Green)
	}
	return -1
}

// RequestDone implements proxy.Observer.
func (m *Metrics) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	c := m.colorOf(u)
	if c < 0 {
		return
	}
	m.requests[c][methodClass(r.Method)][codeClass(status)].Add(1)
	m.duration[c].Observe(d.Seconds())
}

// UpstreamError implements proxy.Observer. Every failed round trip is
// counted in baton_upstream_errors_total; the retried ones also in
// baton_upstream_retries_total.
func (m *Metrics) UpstreamError(u *proxy.Upstream, kind string, retried bool) {
	if retried {
		m.retries.Add(1)
	}
	c := m.colorOf(u)
	if c < 0 {
		return
	}
	m.upErrors[c][kindIndex(kind)].Add(1)
}

// HealthCheck implements switcher.Observer.
func (m *Metrics) HealthCheck(c switcher.Color, err error, d time.Duration) {
	pass := 0
	if err == nil {
		pass = 1
	}
	m.healthChecks[c][pass].Inc()
	m.healthDur[c].Observe(d.Seconds())
}

// SwitchDone implements switcher.Observer.
func (m *Metrics) SwitchDone(res switcher.Result, err error) {
	if err != nil {
		m.switches.WithLabelValues("failed").Inc()
		return
	}
	m.switches.WithLabelValues("ok").Inc()
	m.lastDrain.Set(res.DrainDuration.Seconds())
	m.lastDrained.Set(float64(res.Drained))
	m.lastAbandoned.Set(float64(res.Abandoned))
	m.lastDuration.Set(res.Duration.Seconds())
	m.lastSwitch.SetToCurrentTime()
}

// LastSwitch implements switcher.LastSwitchObserver: a restarted baton
// exports the last switch's gauges from the state file.
func (m *Metrics) LastSwitch(res switcher.Result, finished time.Time) {
	m.lastDrain.Set(res.DrainDuration.Seconds())
	m.lastDrained.Set(float64(res.Drained))
	m.lastAbandoned.Set(float64(res.Abandoned))
	m.lastDuration.Set(res.Duration.Seconds())
	m.lastSwitch.Set(float64(finished.UnixNano()) / 1e9)
}

// DeployDone implements switcher.Observer.
func (m *Metrics) DeployDone(res switcher.Result, err error) {
	if err != nil {
		m.deploys.WithLabelValues("failed").Inc()
		return
	}
	m.deploys.WithLabelValues("ok").Inc()
}

// Live implements switcher.Observer: baton_live_info{color,version} is 1
// for the live colour and its app version ("unknown" if not recorded).
func (m *Metrics) Live(c switcher.Color, version string) {
	if version == "" {
		version = "unknown"
	}
	m.liveMu.Lock()
	m.liveColor, m.liveVersion = c.String(), version
	m.liveMu.Unlock()
}

func methodClass(method string) int {
	switch method {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodOptions:
		return 6
	}
	return nMethods - 1
}

func codeClass(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

func kindIndex(kind string) int {
	switch kind {
	case "dial":
		return 0
	case "reset":
		return 1
	case "timeout":
		return 2
	case "canceled":
		return 3
	}
	return nKinds - 1
}

// hotCollector turns the request-path counters, the upstreams' in-flight
// counts and the live colour into samples at scrape time.
type hotCollector Metrics

var (
	requestsDesc = prometheus.NewDesc("baton_http_requests_total",
		"Proxied requests by the colour that served them, method (other for uncommon ones) and status class (none: the client went away before any status).",
		[]string{"color", "method", "code"}, nil)
	inFlightDesc = prometheus.NewDesc("baton_upstream_in_flight_requests",
		"Requests being proxied to each colour now, from before the upstream round trip to the end of the response body.",
		[]string{"color"}, nil)
	upErrorsDesc = prometheus.NewDesc("baton_upstream_errors_total",
		"Failed round trips to each colour's app by kind (dial, reset, timeout, canceled, other), including those then retried.",
		[]string{"color", "kind"}, nil)
	retriesDesc = prometheus.NewDesc("baton_upstream_retries_total",
		"Requests that reached no app (connection refused) and were sent again to the live colour instead of failing.",
		nil, nil)
	liveDesc = prometheus.NewDesc("baton_live_info",
		"Always 1; labels say which colour takes the traffic and which app version it runs.",
		[]string{"color", "version"}, nil)
)

func (h *hotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- inFlightDesc
	ch <- upErrorsDesc
	ch <- retriesDesc
	ch <- liveDesc
}

func (h *hotCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range switcher.Colors {
		color := c.String()
		// Only the combinations seen so far: 96 mostly-zero series per
		// colour would bury the ones that matter.
		for mi := range nMethods {
			for ci := range nCodes {
				if v := h.requests[c][mi][ci].Load(); v > 0 {
					ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(v),
						color, methodClasses[mi], codeClasses[ci])
				}
			}
		}
		if u := h.ups[c]; u != nil {
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(u.InFlight()), color)
		}
		for ki := range nKinds {
			ch <- prometheus.MustNewConstMetric(upErrorsDesc, prometheus.CounterValue, float64(h.upErrors[c][ki].Load()),
				color, errorKinds[ki])
		}
	}
	ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(h.retries.Load()))
	h.liveMu.Lock()
	color, version := h.liveColor, h.liveVersion
	h.liveMu.Unlock()
	if color != "" {
		ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, 1, color, version)
	}
}

// vcsRevision returns the first 12 characters of the VCS revision recorded
// in the binary, or "unknown".
func vcsRevision() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value[:min(12, len(s.Value))]
			}
		}
	}
	return "unknown"
}
