package metrics_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/internal/sampleapp"
	"github.com/batonproxy/baton/metrics"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// router adapts a proxy.Handler and its upstreams to switcher.Router, as
// cmd/baton does.
type router struct {
	h   *proxy.Handler
	ups [2]*proxy.Upstream
}

func (r *router) Route(c switcher.Color)          { r.h.Route(r.ups[c]) }
func (r *router) InFlight(c switcher.Color) int64 { return r.ups[c].InFlight() }
func (r *router) CloseIdle(c switcher.Color)      { r.ups[c].CloseIdleConnections() }

type nopStopper struct{}

func (nopStopper) Stop(context.Context, string, time.Duration) (string, error) {
	return "left running", nil
}

// stack is baton's request and control path on loopback: two sample apps
// (v1 on blue, v2 on green), the proxy, the switcher and the metrics.
type stack struct {
	m      *metrics.Metrics
	rt     *router
	sw     *switcher.Switcher
	public *httptest.Server
	store  *state.Store
	cfg    switcher.Config
}

func newStack(t *testing.T, opts metrics.Options, popts proxy.Options, blueAddr string) *stack {
	t.Helper()
	green := httptest.NewServer(sampleapp.Handler("v2", ""))
	t.Cleanup(green.Close)
	if blueAddr == "" {
		blue := httptest.NewServer(sampleapp.Handler("v1", ""))
		t.Cleanup(blue.Close)
		blueAddr = blue.Listener.Addr().String()
	}
	greenAddr := green.Listener.Addr().String()

	store, err := state.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Save(state.State{Live: "blue", Instances: map[string]state.Instance{
		"blue": {AppVersion: "v1", Addr: blueAddr}, "green": {AppVersion: "v2", Addr: greenAddr},
	}}); err != nil {
		t.Fatal(err)
	}

	s := &stack{m: metrics.New(opts), store: store}
	svc := s.m.Service("default")
	popts.Observer = svc
	h := proxy.NewHandler(popts)
	s.rt = &router{h: h}
	for c, addr := range [2]string{blueAddr, greenAddr} {
		u, err := proxy.NewUpstream(switcher.Color(c).String(), addr)
		if err != nil {
			t.Fatal(err)
		}
		s.rt.ups[c] = u
		svc.Track(switcher.Color(c), u)
	}
	s.cfg = switcher.Config{
		Addrs:          [2]string{blueAddr, greenAddr},
		HealthInterval: 10 * time.Millisecond,
		DrainTimeout:   5 * time.Second,
		Observer:       svc,
	}
	s.sw, err = switcher.New(t.Context(), s.cfg, s.rt, health.New("", time.Second), nopStopper{}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.public = httptest.NewServer(h)
	t.Cleanup(s.public.Close)
	return s
}

// scrape fetches /metrics from m's handler over HTTP and parses it.
func scrape(t *testing.T, m *metrics.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// value returns the value of the sample of family name whose labels include
// all of labels (given as name, value pairs), and whether there is one. It
// fails the test if several samples match.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		return 0, false
	}
	var found []*dto.Metric
	for _, m := range mf.Metric {
		if hasLabels(m, labels) {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 0:
		return 0, false
	case 1:
	default:
		t.Fatalf("%s%v: %d samples match; want 1", name, labels, len(found))
	}
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	}
	t.Fatalf("%s: unsupported metric type", name)
	return 0, false
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, lp := range m.Label {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// want checks that the sample exists and has value v.
func want(t *testing.T, mfs map[string]*dto.MetricFamily, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := value(t, mfs, name, labels...)
	if !ok {
		t.Errorf("%s%v: no such sample; want %v", name, labels, v)
		return
	}
	if got != v {
		t.Errorf("%s%v = %v; want %v", name, labels, got, v)
	}
}

// sum adds up the samples of family name whose labels include labels.
func sum(mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	var s float64
	mf := mfs[name]
	if mf == nil {
		return 0
	}
	for _, m := range mf.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Histogram != nil:
			s += float64(m.Histogram.GetSampleCount())
		}
	}
	return s
}

// TestScrapeAfterTrafficAndSwitch sends a real mixed load through the proxy
// across a switch with a request still in flight on the old colour, then
// scrapes /metrics and checks that every number matches what the client saw.
func TestScrapeAfterTrafficAndSwitch(t *testing.T) {
	s := newStack(t, metrics.Options{Version: "test", Revision: "abc123"}, proxy.Options{}, "")
	addr := s.public.Listener.Addr().String()

	mfs := scrape(t, s.m)
	want(t, mfs, 1, "baton_live_info", "color", "blue", "version", "v1")
	want(t, mfs, 1, "baton_build_info", "version", "test", "revision", "abc123")
	want(t, mfs, 0, "baton_switches_total", "result", "ok")

	ctx, stop := context.WithCancel(t.Context())
	reportc := make(chan *loadgen.Report, 1)
	go func() {
		reportc <- loadgen.Run(ctx, loadgen.Config{
			Target: addr, Rate: 400, KeepAliveConns: 4,
			NewConnFraction: 0.2, SlowFraction: 0.05, SlowMin: 20 * time.Millisecond, SlowMax: 100 * time.Millisecond,
			PostFraction: 0.2,
		})
	}()
	time.Sleep(300 * time.Millisecond)

	// A slow request on blue that the switch has to drain.
	slowDone := make(chan error, 1)
	go func() {
		resp, err := http.Get(s.public.URL + "/slow?ms=400")
		if err == nil {
			resp.Body.Close()
		}
		slowDone <- err
	}()
	waitFor(t, "the slow request to reach blue", func() bool { return s.rt.ups[switcher.Blue].InFlight() > 0 })

	res, err := s.sw.Switch(t.Context(), switcher.SwitchRequest{}, nil)
	if err != nil {
		t.Fatalf("switch: %v", err)
	}
	if err := <-slowDone; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	rep := <-reportc
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Fatalf("%d of %d requests failed; first: %+v", len(f), rep.Total(), f[0])
	}

	// A few requests of known method and status on green.
	client := s.public.Client()
	for _, r := range []struct{ method, path string }{{"GET", "/fail"}, {"GET", "/fail"}, {"HEAD", "/"}, {"PROPFIND", "/"}} {
		req, _ := http.NewRequest(r.method, s.public.URL+r.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// What the client saw, by colour (from the version that answered) and
	// by method.
	byColor := map[string]float64{}
	posts := map[string]float64{}
	for _, r := range rep.Results {
		c := map[string]string{"v1": "blue", "v2": "green"}[r.Version]
		byColor[c]++
		if r.Kind == loadgen.KindPost {
			posts[c]++
		}
	}
	byColor["blue"]++ // the slow request
	byColor["green"] += 4
	total := float64(rep.Total() + 5)

	// RequestDone runs just after the response is complete, so the last
	// counts may land a moment after the client has its answer.
	waitFor(t, "all requests to be counted", func() bool {
		return sum(scrape(t, s.m), "baton_http_requests_total") == total
	})
	mfs = scrape(t, s.m)
	t.Logf("%d requests: blue %v, green %v; switch drained %d in %s", int(total), byColor["blue"], byColor["green"], res.Drained, res.DrainDuration)

	for _, c := range []string{"blue", "green"} {
		if got := sum(mfs, "baton_http_requests_total", "color", c); got != byColor[c] {
			t.Errorf("baton_http_requests_total{color=%q} sums to %v; want %v", c, got, byColor[c])
		}
		want(t, mfs, byColor[c], "baton_http_request_duration_seconds", "color", c)
		want(t, mfs, posts[c], "baton_http_requests_total", "color", c, "method", "POST", "code", "2xx")
		want(t, mfs, 0, "baton_upstream_in_flight_requests", "color", c)
		if got := sum(mfs, "baton_upstream_errors_total", "color", c); got != 0 {
			t.Errorf("baton_upstream_errors_total{color=%q} sums to %v; want 0", c, got)
		}
	}
	want(t, mfs, 2, "baton_http_requests_total", "color", "green", "method", "GET", "code", "5xx")
	want(t, mfs, 1, "baton_http_requests_total", "color", "green", "method", "HEAD", "code", "2xx")
	want(t, mfs, 1, "baton_http_requests_total", "color", "green", "method", "other", "code", "4xx") // 405 from the app
	want(t, mfs, 0, "baton_upstream_retries_total")

	want(t, mfs, 1, "baton_switches_total", "result", "ok")
	want(t, mfs, 0, "baton_switches_total", "result", "failed")
	want(t, mfs, 0, "baton_deploys_total", "result", "ok")
	if res.Drained < 1 {
		t.Errorf("switch drained %d requests; want at least the slow one", res.Drained)
	}
	want(t, mfs, float64(res.Drained), "baton_last_switch_drained_requests")
	want(t, mfs, 0, "baton_last_switch_abandoned_requests")
	want(t, mfs, res.DrainDuration.Seconds(), "baton_last_switch_drain_seconds")
	if res.DrainDuration <= 0 {
		t.Errorf("drain took %v; want > 0 with a request in flight", res.DrainDuration)
	}
	want(t, mfs, res.Duration.Seconds(), "baton_last_switch_duration_seconds")
	if ts, _ := value(t, mfs, "baton_last_switch_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("baton_last_switch_timestamp_seconds = %v; want about now", ts)
	}
	if got, _ := value(t, mfs, "baton_health_checks_total", "color", "green", "result", "pass"); got < switcher.DefaultHealthPasses {
		t.Errorf("baton_health_checks_total{green,pass} = %v; want at least %d", got, switcher.DefaultHealthPasses)
	}
	if got := sum(mfs, "baton_health_check_duration_seconds", "color", "green"); got < switcher.DefaultHealthPasses {
		t.Errorf("baton_health_check_duration_seconds{green} count = %v; want at least %d", got, switcher.DefaultHealthPasses)
	}
	want(t, mfs, 1, "baton_live_info", "color", "green", "version", "v2")
	if n := len(mfs["baton_live_info"].Metric); n != 1 {
		t.Errorf("baton_live_info has %d samples; want 1", n)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s missing: want the Go and process collectors", name)
		}
	}
}

// TestUpstreamErrorsAndRetries checks the error and retry counters against
// an app that is not there: every request is refused at dial.
func TestUpstreamErrorsAndRetries(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name         string
		retryTimeout time.Duration
		wantRetries  bool
	}{
		{"no retries", -1, false},
		{"retries", 50 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, metrics.Options{NoRuntimeCollectors: true}, proxy.Options{RetryTimeout: tc.retryTimeout}, dead)
			for range 3 {
				resp, err := http.Get(s.public.URL + "/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("status %d; want 502 from a dead app", resp.StatusCode)
				}
			}
			var mfs map[string]*dto.MetricFamily
			waitFor(t, "3 requests counted", func() bool {
				mfs = scrape(t, s.m)
				return sum(mfs, "baton_http_requests_total") == 3
			})
			want(t, mfs, 3, "baton_http_requests_total", "color", "blue", "method", "GET", "code", "5xx")
			want(t, mfs, 0, "baton_upstream_in_flight_requests", "color", "blue")
			retries, _ := value(t, mfs, "baton_upstream_retries_total")
			dials, _ := value(t, mfs, "baton_upstream_errors_total", "color", "blue", "kind", "dial")
			if !tc.wantRetries {
				if retries != 0 || dials != 3 {
					t.Errorf("retries %v, dial errors %v; want 0 and 3", retries, dials)
				}
				return
			}
			// Each request: its retries, then the final failure.
			if retries < 3 || dials != retries+3 {
				t.Errorf("retries %v, dial errors %v; want at least 3 retries and one more dial error per request", retries, dials)
			}
		})
	}
}

// TestMetricNames compares the names, types and help of baton's own metric
// families with testdata/metrics.golden (regenerate with -update), so that a
// renamed metric, which breaks dashboards and alerts, is a visible change.
func TestMetricNames(t *testing.T) {
	m := metrics.New(metrics.Options{})
	svc := m.Service("default")
	svc.HealthCheck(switcher.Blue, nil, time.Millisecond)
	svc.Live(switcher.Blue, "v1")
	svc.RequestDone(mustUpstream(t, "blue"), proxy.RequestInfo{Method: "GET", Path: "/"}, 200, time.Millisecond)
	mfs := scrape(t, m)
	var lines []string
	for name, mf := range mfs {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue // the collectors' own, which vary with the Go version
		}
		var labels []string
		for _, lp := range mf.Metric[0].Label {
			labels = append(labels, lp.GetName())
		}
		lines = append(lines, fmt.Sprintf("%s %s {%s} %s", name, strings.ToLower(mf.GetType().String()), strings.Join(labels, ","), mf.GetHelp()))
	}
	slices.Sort(lines)
	got := strings.Join(lines, "\n") + "\n"
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(b) != got {
		t.Errorf("metric families changed; got:\n%s\nwant:\n%s\n(run go test ./metrics -run TestMetricNames -update if intended, and update the dashboard and alerts)", got, b)
	}
}

// TestRequestDoneAllocs guards the request path: counting a request must not
// allocate.
func TestRequestDoneAllocs(t *testing.T) {
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	svc := m.Service("default")
	u := mustUpstream(t, "green")
	svc.Track(switcher.Green, u)
	r := proxy.RequestInfo{Method: "POST", Path: "/"}
	allocs := testing.AllocsPerRun(1000, func() {
		svc.RequestDone(u, r, 201, 3*time.Millisecond)
		svc.UpstreamError(u, "reset", false)
	})
	if allocs != 0 {
		t.Errorf("RequestDone+UpstreamError allocate %v times per call; want 0", allocs)
	}
}

func BenchmarkRequestDone(b *testing.B) {
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	svc := m.Service("default")
	u, _ := proxy.NewUpstream("blue", "127.0.0.1:1")
	svc.Track(switcher.Blue, u)
	r := proxy.RequestInfo{Method: "GET", Path: "/"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			svc.RequestDone(u, r, 200, time.Millisecond)
		}
	})
}

func mustUpstream(t *testing.T, name string) *proxy.Upstream {
	t.Helper()
	u, err := proxy.NewUpstream(name, "127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRollbackIsCounted (issue 13, item 19): 'baton rollback' moves traffic
// back to the old version, so baton_rollbacks_total counts it, as an
// operator's command.
func TestRollbackIsCounted(t *testing.T) {
	s := newStack(t, metrics.Options{NoRuntimeCollectors: true}, proxy.Options{}, "")
	// Apps baton did not launch: a rollback switches back to blue, which
	// keeps running (nopStopper).
	if err := s.store.Save(state.State{Live: "blue"}); err != nil {
		t.Fatal(err)
	}
	sw, err := switcher.New(t.Context(), s.cfg, s.rt, health.New("", time.Second), nopStopper{}, s.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.Switch(t.Context(), switcher.SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	want(t, scrape(t, s.m), 0, "baton_rollbacks_total", "reason", switcher.ReasonCommand)
	if _, err := sw.Rollback(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	want(t, scrape(t, s.m), 1, "baton_rollbacks_total", "reason", switcher.ReasonCommand)
}

// TestLastSwitchRestoredAfterRestart (issue 13, item 19): a restarted (or
// upgraded) baton exports the baton_last_switch_* gauges of the last switch
// from the state file, not zeros that a dashboard takes for a new switch.
func TestLastSwitchRestoredAfterRestart(t *testing.T) {
	s := newStack(t, metrics.Options{NoRuntimeCollectors: true}, proxy.Options{}, "")
	if _, err := s.sw.Switch(t.Context(), switcher.SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, s.m)
	names := []string{"baton_last_switch_timestamp_seconds", "baton_last_switch_duration_seconds",
		"baton_last_switch_drain_seconds", "baton_last_switch_drained_requests", "baton_last_switch_abandoned_requests"}

	// The next baton: a new Metrics and Switcher on the same state file.
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	cfg := s.cfg
	cfg.Observer = m.Service("default")
	if _, err := switcher.New(t.Context(), cfg, s.rt, health.New("", time.Second), nopStopper{}, s.store, nil); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, m)
	for _, name := range names {
		b, _ := value(t, before, name)
		a, ok := value(t, after, name)
		if !ok {
			t.Errorf("%s: not exported after the restart", name)
			continue
		}
		// The state keeps durations in nanoseconds and times to the
		// nanosecond; the gauge the old baton set came from its own
		// clock a moment later.
		if d := a - b; d < -0.01 || d > 0.01 {
			t.Errorf("%s = %v after the restart; want %v as before", name, a, b)
		}
	}
	if ts, _ := value(t, after, "baton_last_switch_timestamp_seconds"); ts == 0 {
		t.Error("baton_last_switch_timestamp_seconds is 0 after the restart")
	}
}

// Two services are counted apart, and a removed one stops being exported;
// requests no service claims are counted on their own.
func TestServicesAreCountedApart(t *testing.T) {
	m := metrics.New(metrics.Options{NoRuntimeCollectors: true})
	shop, api := m.Service("shop"), m.Service("api")
	shop.RequestDone(mustUpstream(t, "blue"), proxy.RequestInfo{Method: "GET"}, 200, time.Millisecond)
	shop.RequestDone(mustUpstream(t, "blue"), proxy.RequestInfo{Method: "GET"}, 200, time.Millisecond)
	api.RequestDone(mustUpstream(t, "green"), proxy.RequestInfo{Method: "POST"}, 502, time.Millisecond)
	api.Live(switcher.Green, "2.0")
	m.NoRoute(proxy.RequestInfo{}, 0)
	if m.Service("shop") != shop {
		t.Error("Service returned a new value for a known service")
	}
	mfs := scrape(t, m)
	want(t, mfs, 2, "baton_http_requests_total", "service", "shop", "color", "blue", "method", "GET", "code", "2xx")
	want(t, mfs, 1, "baton_http_requests_total", "service", "api", "color", "green", "method", "POST", "code", "5xx")
	if got := sum(mfs, "baton_http_requests_total", "service", "api", "color", "blue"); got != 0 {
		t.Errorf("api's blue counted %v requests; want 0", got)
	}
	want(t, mfs, 1, "baton_live_info", "service", "api", "color", "green", "version", "2.0")
	want(t, mfs, 0, "baton_switches_total", "service", "shop", "result", "ok")
	want(t, mfs, 1, "baton_no_route_requests_total")

	m.RemoveService("shop")
	mfs = scrape(t, m)
	for name, mf := range mfs {
		for _, s := range mf.Metric {
			for _, l := range s.Label {
				if l.GetName() == "service" && l.GetValue() == "shop" {
					t.Errorf("%s still exports service shop after RemoveService", name)
				}
			}
		}
	}
	want(t, mfs, 1, "baton_http_requests_total", "service", "api", "color", "green", "method", "POST", "code", "5xx")
}
