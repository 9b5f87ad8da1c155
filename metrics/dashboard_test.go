package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/metrics"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/switcher"
)

// dashboardPanel is what the test reads of a Grafana panel.
type dashboardPanel struct {
	Title   string           `json:"title"`
	Type    string           `json:"type"`
	Panels  []dashboardPanel `json:"panels"` // a collapsed row's
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// metricName matches the metric names in a PromQL expression: baton's and
// the Go and process collectors'.
var metricName = regexp.MustCompile(`\b(?:baton|go|process)_[a-z0-9_]+\b`)

// TestDashboardNamesExportedMetrics (issue 13, item 19): the example
// dashboard is valid JSON, every metric its panels and annotations query is
// one baton exports (a renamed metric would leave a panel empty), and it
// has panels for deploys, rollbacks and the canary's share.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("../examples/grafana/baton-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels      []dashboardPanel `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}

	m := metrics.New(metrics.Options{})
	svc := m.Service("default")
	svc.Live(switcher.Blue, "v1")
	svc.RequestDone(mustUpstream(t, "blue"), proxy.RequestInfo{Method: "GET", Path: "/"}, 200, time.Millisecond)
	exported := map[string]bool{}
	for name, mf := range scrape(t, m) {
		exported[name] = true
		if mf.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exported[name+s] = true
			}
		}
	}
	// baton_upstream_in_flight_requests is exported once an upstream is
	// tracked; the scrape above tracks none.
	exported["baton_upstream_in_flight_requests"] = true

	queried := map[string]string{} // metric name → the panel that queries it
	var walk func(ps []dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has a target without an expr", p.Title)
				}
				for _, name := range metricName.FindAllString(tg.Expr, -1) {
					queried[name] = p.Title
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		for _, name := range metricName.FindAllString(a.Expr, -1) {
			queried[name] = "annotation " + a.Name
		}
	}
	for name, where := range queried {
		if !exported[name] {
			t.Errorf("%s queries %s, which baton does not export", where, name)
		}
	}
	for _, name := range []string{"baton_deploys_total", "baton_rollbacks_total", "baton_canary_percent"} {
		if _, ok := queried[name]; !ok {
			t.Errorf("no panel shows %s", name)
		}
	}
}
