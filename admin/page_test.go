package admin

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// changingController's live colour is whatever live holds.
type changingController struct {
	fakeController
	live atomic.Value
}

func (c *changingController) Status() switcher.Status {
	return switcher.Status{Live: c.live.Load().(string)}
}

// TestStatusPageAndEvents: GET / serves the page to anyone (it holds no
// data) with a policy that lets it load nothing from elsewhere; the
// stream it reads needs the token, sends the services at once and again
// when something changes; a cross-site page cannot read it.
func TestStatusPageAndEvents(t *testing.T) {
	ctl := &changingController{}
	ctl.live.Store("blue")
	srv := newTestServer(t, "sekret", ctl)

	code, body, h := call(t, "GET", srv.URL+"/", "", "")
	if code != 200 || !strings.Contains(body, "<title>baton</title>") || !strings.HasPrefix(h.Get("Content-Type"), "text/html") ||
		!strings.Contains(h.Get("Content-Security-Policy"), "connect-src 'self'") {
		t.Errorf("GET / without a token: %d %s, CSP %q; want the page", code, h.Get("Content-Type"), h.Get("Content-Security-Policy"))
	}
	if code, _, _ := call(t, "GET", srv.URL+"/v1/events", "", ""); code != 401 {
		t.Errorf("GET /v1/events without the token: %d; want 401", code)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer sekret")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Error(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("GET /v1/events from another site: %d; want 403", resp.StatusCode)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer sekret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /v1/events: %d %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	next := func() string {
		t.Helper()
		var event, data string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && data != "":
				if event != "services" {
					t.Errorf("event %q; want services", event)
				}
				return data
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}
	if first := next(); !strings.Contains(first, `"live":"blue"`) {
		t.Errorf("first event %s; want the services, blue live", first)
	}
	sent := time.Now()
	ctl.live.Store("green")
	if second := next(); !strings.Contains(second, `"live":"green"`) {
		t.Errorf("event after the change %s; want green live", second)
	} else if d := time.Since(sent); d > 2*time.Second {
		t.Errorf("the change took %s to reach the stream", d)
	}
}

// TestProbeRecord: a probe's record (verdict, summary, SVG plot) is kept
// per service for the status page: a body that is no SVG is 400, a
// service without one is 404, and the summary names the last one without
// its plot.
func TestProbeRecord(t *testing.T) {
	srv := newTestServer(t, "", &fakeController{})
	if code, body, _ := call(t, "GET", srv.URL+"/v1/services/default/probe", "", ""); code != 404 || !strings.Contains(body, "--probe") {
		t.Errorf("GET probe before any: %d %s; want 404 saying how to send one", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/services/default/probe", "", `{"summary":"x","svg":"<script>alert(1)</script>"}`); code != 400 {
		t.Errorf("POST probe without an SVG: %d %s; want 400", code, body)
	}
	rec := `{"deploy_id":"d1","pass":true,"summary":"136 requests, 0 failed","svg":"<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>"}`
	if code, body, _ := call(t, "POST", srv.URL+"/v1/probe", "", rec); code != 200 || !strings.Contains(body, `"deploy_id": "d1"`) {
		t.Fatalf("POST /v1/probe: %d %s", code, body)
	}
	if code, body, _ := call(t, "GET", srv.URL+"/v1/services/default/probe", "", ""); code != 200 || !strings.Contains(body, `\u003csvg`) {
		t.Errorf("GET probe: %d %s; want the record with its plot", code, body)
	}
	_, body, _ := call(t, "GET", srv.URL+"/v1/services", "", "")
	if !strings.Contains(body, `"deploy_id": "d1"`) || strings.Contains(body, `\u003csvg`) {
		t.Errorf("GET /v1/services: %s; want the probe named, without its plot", body)
	}
}
