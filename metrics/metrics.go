// Package metrics exports baton's Prometheus metrics on a registry of its own.
//
// The model: one Metrics value holds the registry and, per service of
// baton, a Service that is both that service's proxy.Observer (told about
// every proxied request and every failed upstream round trip, on the
// request path) and its switcher.Observer (told about health checks,
// switches, deploys and the live colour, on the control path); each series
// carries the service's name. Metrics itself counts the requests no
// service claims (proxy.NoRouteObserver). Handler serves the registry in the
// Prometheus text format; cmd mounts it on the admin API and, if asked, on a
// listener of its own.
//
// The request path is kept cheap: a request adds one to a counter in a fixed
// array indexed by colour, method class and status class (an atomic add, no
// map lookup, no label hashing, no allocation) and observes its duration in
// a histogram child resolved per service and colour when the service is
// created. Those
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

// Metrics holds baton's metrics: the registry, and one Service per service
// of baton, which is what the proxy and the switcher of that service are
// told about. Every series but baton_build_info and
// baton_no_route_requests_total carries a service label. It is safe for
// concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	mu       sync.Mutex // guards services; never taken on the request path
	services map[string]*Service
	noRoute  atomic.Uint64

	// The vectors, by service first; each Service holds its children.
	durVec        *prometheus.HistogramVec
	healthVec     *prometheus.CounterVec
	healthDurVec  *prometheus.HistogramVec
	switches      *prometheus.CounterVec
	deploys       *prometheus.CounterVec
	lastDrain     *prometheus.GaugeVec
	lastDrained   *prometheus.GaugeVec
	lastAbandoned *prometheus.GaugeVec
	lastDuration  *prometheus.GaugeVec
	lastSwitch    *prometheus.GaugeVec
	rollout       rolloutMetrics // see rollout.go
}

// Service is the metrics of one service. Create it with Metrics.Service
// and give it the two upstreams with Track before the proxy serves.
type Service struct {
	name string

	// Request path. ups is written by Track; a reload that changes the
	// service tracks its new upstreams while the old ones finish requests.
	ups      [2]atomic.Pointer[proxy.Upstream]
	requests [2][nMethods][nCodes]atomic.Uint64
	upErrors [2][nKinds]atomic.Uint64
	retries  atomic.Uint64
	duration [2]prometheus.Observer

	// Control path.
	healthChecks  [2][2]prometheus.Counter // [colour][0 fail, 1 pass]
	healthDur     [2]prometheus.Observer
	switches      *prometheus.CounterVec // by result
	deploys       *prometheus.CounterVec
	lastDrain     prometheus.Gauge
	lastDrained   prometheus.Gauge
	lastAbandoned prometheus.Gauge
	lastDuration  prometheus.Gauge
	lastSwitch    prometheus.Gauge
	rollout       rolloutMetrics // curried to this service

	liveMu      sync.Mutex
	liveColor   string // "" until Live is first called
	liveVersion string
}

var (
	_ proxy.Observer              = (*Service)(nil)
	_ switcher.Observer           = (*Service)(nil)
	_ switcher.LastSwitchObserver = (*Service)(nil)
	_ proxy.NoRouteObserver       = (*Metrics)(nil)
)

// New returns Metrics registered on a new registry, with the Go and process
// collectors unless opts says otherwise, and no service yet.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), services: map[string]*Service{}}
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
		Help:    "Time from receiving a proxied request to the end of its response, by service and the colour that served it.",
		Buckets: RequestDurationBuckets,
	}, []string{"service", "color"})
	m.healthVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_health_checks_total",
		Help: "Health checks of each colour's app, from switches and from the background monitor, by result (pass or fail).",
	}, []string{"service", "color", "result"})
	m.healthDurVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "baton_health_check_duration_seconds",
		Help:    "Duration of health checks of each colour's app.",
		Buckets: HealthCheckDurationBuckets,
	}, []string{"service", "color"})
	m.switches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_switches_total",
		Help: "Switches that started, by result (ok or failed). A failed switch left the old colour serving.",
	}, []string{"service", "result"})
	m.deploys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_deploys_total",
		Help: "Deploys that started, by result (ok or failed).",
	}, []string{"service", "result"})
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"service"})
	}
	m.lastDrain = gauge("baton_last_switch_drain_seconds",
		"How long the last successful switch waited for the old colour's requests in flight to finish.")
	m.lastDrained = gauge("baton_last_switch_drained_requests",
		"Requests in flight on the old colour right after the last successful switch's swap.")
	m.lastAbandoned = gauge("baton_last_switch_abandoned_requests",
		"Requests still in flight on the old colour when the last successful switch's drain deadline passed; 0 on a clean drain.")
	m.lastDuration = gauge("baton_last_switch_duration_seconds",
		"Duration of the last successful switch, health checks to stop of the old app.")
	m.lastSwitch = gauge("baton_last_switch_timestamp_seconds",
		"Unix time at which the last successful switch finished (restored from the state file at start-up); 0 if none is recorded.")
	m.reg.MustRegister(buildInfo, m.durVec, m.healthVec, m.healthDurVec, m.switches, m.deploys,
		m.lastDrain, m.lastDrained, m.lastAbandoned, m.lastDuration, m.lastSwitch, (*hotCollector)(m))
	m.rollout = newRolloutMetrics(m.reg)
	return m
}

// Service returns the metrics of the service called name, creating them
// (every series at zero) on first use.
func (m *Metrics) Service(name string) *Service {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.services[name]; ok {
		return s
	}
	svc := prometheus.Labels{"service": name}
	s := &Service{
		name:          name,
		switches:      m.switches.MustCurryWith(svc),
		deploys:       m.deploys.MustCurryWith(svc),
		lastDrain:     m.lastDrain.With(svc),
		lastDrained:   m.lastDrained.With(svc),
		lastAbandoned: m.lastAbandoned.With(svc),
		lastDuration:  m.lastDuration.With(svc),
		lastSwitch:    m.lastSwitch.With(svc),
		rollout:       m.rollout.curry(svc),
	}
	for _, c := range switcher.Colors {
		s.duration[c] = m.durVec.WithLabelValues(name, c.String())
		s.healthChecks[c][0] = m.healthVec.WithLabelValues(name, c.String(), "fail")
		s.healthChecks[c][1] = m.healthVec.WithLabelValues(name, c.String(), "pass")
		s.healthDur[c] = m.healthDurVec.WithLabelValues(name, c.String())
	}
	// Export the outcomes at zero from the start, so that rate() and
	// alerts see a series before the first switch.
	for _, r := range []string{"ok", "failed"} {
		s.switches.WithLabelValues(r)
		s.deploys.WithLabelValues(r)
	}
	s.rollout.zero()
	m.services[name] = s
	return s
}

// RemoveService stops exporting the service called name (a reload removed
// it): its series are gone from the next scrape.
func (m *Metrics) RemoveService(name string) {
	m.mu.Lock()
	delete(m.services, name)
	m.mu.Unlock()
	svc := prometheus.Labels{"service": name}
	m.durVec.DeletePartialMatch(svc)
	m.healthVec.DeletePartialMatch(svc)
	m.healthDurVec.DeletePartialMatch(svc)
	m.switches.DeletePartialMatch(svc)
	m.deploys.DeletePartialMatch(svc)
	for _, g := range []*prometheus.GaugeVec{m.lastDrain, m.lastDrained, m.lastAbandoned, m.lastDuration, m.lastSwitch} {
		g.DeletePartialMatch(svc)
	}
	m.rollout.delete(svc)
}

// NoRoute implements proxy.NoRouteObserver: a request no service claims
// counts in baton_no_route_requests_total.
func (m *Metrics) NoRoute(proxy.RequestInfo, time.Duration) { m.noRoute.Add(1) }

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

// Track tells s that u serves colour c: its requests are counted under
// c, and baton_upstream_in_flight_requests{color=c} reads u.InFlight. Call it
// for both colours before the proxy serves. An untracked upstream is matched
// by its name ("blue" or "green"); one with any other name is not counted.
func (s *Service) Track(c switcher.Color, u *proxy.Upstream) {
	s.ups[c].Store(u)
}

// colorOf returns u's colour index, or -1.
func (s *Service) colorOf(u *proxy.Upstream) int {
	switch {
	case u == s.ups[switcher.Blue].Load():
		return int(switcher.Blue)
	case u == s.ups[switcher.Green].Load():
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
func (s *Service) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	c := s.colorOf(u)
	if c < 0 {
		return
	}
	s.requests[c][methodClass(r.Method)][codeClass(status)].Add(1)
	s.duration[c].Observe(d.Seconds())
}

// UpstreamError implements proxy.Observer. Every failed round trip is
// counted in baton_upstream_errors_total; the retried ones also in
// baton_upstream_retries_total.
func (s *Service) UpstreamError(u *proxy.Upstream, kind string, retried bool) {
	if retried {
		s.retries.Add(1)
	}
	c := s.colorOf(u)
	if c < 0 {
		return
	}
	s.upErrors[c][kindIndex(kind)].Add(1)
}

// HealthCheck implements switcher.Observer.
func (s *Service) HealthCheck(c switcher.Color, err error, d time.Duration) {
	pass := 0
	if err == nil {
		pass = 1
	}
	s.healthChecks[c][pass].Inc()
	s.healthDur[c].Observe(d.Seconds())
}

// SwitchDone implements switcher.Observer.
func (s *Service) SwitchDone(res switcher.Result, err error) {
	if err != nil {
		s.switches.WithLabelValues("failed").Inc()
		return
	}
	s.switches.WithLabelValues("ok").Inc()
	s.lastDrain.Set(res.DrainDuration.Seconds())
	s.lastDrained.Set(float64(res.Drained))
	s.lastAbandoned.Set(float64(res.Abandoned))
	s.lastDuration.Set(res.Duration.Seconds())
	s.lastSwitch.SetToCurrentTime()
}

// LastSwitch implements switcher.LastSwitchObserver: a restarted baton
// exports the last switch's gauges from the state file.
func (s *Service) LastSwitch(res switcher.Result, finished time.Time) {
	s.lastDrain.Set(res.DrainDuration.Seconds())
	s.lastDrained.Set(float64(res.Drained))
	s.lastAbandoned.Set(float64(res.Abandoned))
	s.lastDuration.Set(res.Duration.Seconds())
	s.lastSwitch.Set(float64(finished.UnixNano()) / 1e9)
}

// DeployDone implements switcher.Observer.
func (s *Service) DeployDone(res switcher.Result, err error) {
	if err != nil {
		s.deploys.WithLabelValues("failed").Inc()
		return
	}
	s.deploys.WithLabelValues("ok").Inc()
}

// Live implements switcher.Observer: baton_live_info{service,color,version}
// is 1 for the live colour and its app version ("unknown" if not
// recorded).
func (s *Service) Live(c switcher.Color, version string) {
	if version == "" {
		version = "unknown"
	}
	s.liveMu.Lock()
	s.liveColor, s.liveVersion = c.String(), version
	s.liveMu.Unlock()
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
// counts and the live colours into samples at scrape time.
type hotCollector Metrics

var (
	requestsDesc = prometheus.NewDesc("baton_http_requests_total",
		"Proxied requests by service, the colour that served them, method (other for uncommon ones) and status class (none: the client went away before any status).",
		[]string{"service", "color", "method", "code"}, nil)
	inFlightDesc = prometheus.NewDesc("baton_upstream_in_flight_requests",
		"Requests being proxied to each colour now, from before the upstream round trip to the end of the response body.",
		[]string{"service", "color"}, nil)
	upErrorsDesc = prometheus.NewDesc("baton_upstream_errors_total",
		"Failed round trips to each colour's app by kind (dial, reset, timeout, canceled, other), including those then retried.",
		[]string{"service", "color", "kind"}, nil)
	retriesDesc = prometheus.NewDesc("baton_upstream_retries_total",
		"Requests that reached no app (connection refused) and were sent again to the live colour instead of failing.",
		[]string{"service"}, nil)
	liveDesc = prometheus.NewDesc("baton_live_info",
		"Always 1; labels say which colour takes the service's traffic and which app version it runs.",
		[]string{"service", "color", "version"}, nil)
	noRouteDesc = prometheus.NewDesc("baton_no_route_requests_total",
		"Requests no service claims (their host and path match no route): answered 404.",
		nil, nil)
)

func (h *hotCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- inFlightDesc
	ch <- upErrorsDesc
	ch <- retriesDesc
	ch <- liveDesc
	ch <- noRouteDesc
}

func (h *hotCollector) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	services := make([]*Service, 0, len(h.services))
	for _, s := range h.services {
		services = append(services, s)
	}
	h.mu.Unlock()
	for _, s := range services {
		s.collect(ch)
	}
	ch <- prometheus.MustNewConstMetric(noRouteDesc, prometheus.CounterValue, float64(h.noRoute.Load()))
}

func (s *Service) collect(ch chan<- prometheus.Metric) {
	for _, c := range switcher.Colors {
		color := c.String()
		// Only the combinations seen so far: 96 mostly-zero series per
		// colour would bury the ones that matter.
		for mi := range nMethods {
			for ci := range nCodes {
				if v := s.requests[c][mi][ci].Load(); v > 0 {
					ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(v),
						s.name, color, methodClasses[mi], codeClasses[ci])
				}
			}
		}
		if u := s.ups[c].Load(); u != nil {
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(u.InFlight()), s.name, color)
		}
		for ki := range nKinds {
			ch <- prometheus.MustNewConstMetric(upErrorsDesc, prometheus.CounterValue, float64(s.upErrors[c][ki].Load()),
				s.name, color, errorKinds[ki])
		}
	}
	ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(s.retries.Load()), s.name)
	s.liveMu.Lock()
	color, version := s.liveColor, s.liveVersion
	s.liveMu.Unlock()
	if color != "" {
		ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, 1, s.name, color, version)
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
