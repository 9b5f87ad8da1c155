package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// fullController implements every optional interface (deploy, rollback)
// and records each call that reaches it.
type fullController struct {
	fakeController
	mu        sync.Mutex
	deploys   int
	rollbacks int
	rbErr     error // returned before any event when set
}

func (f *fullController) Deploy(ctx context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	f.mu.Lock()
	f.deploys++
	f.mu.Unlock()
	return switcher.DeployResult{}, nil
}

func (f *fullController) Rollback(ctx context.Context, emit func(switcher.Event)) (switcher.DeployResult, error) {
	f.mu.Lock()
	f.rollbacks++
	err := f.rbErr
	f.mu.Unlock()
	if err != nil {
		return switcher.DeployResult{}, err
	}
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "rollback"})
	emit(switcher.Event{Time: time.Now(), Step: "plan", Message: "green's instance of v1 is gone: starting v1 again"})
	return switcher.DeployResult{
		Result:   switcher.Result{ID: "r1", From: switcher.Blue, To: switcher.Green, Warnings: []string{"could not save the state"}},
		Version:  "v1",
		Instance: state.Instance{PID: 77, Artifact: "/srv/releases/v1/app"},
	}, nil
}

func (f *fullController) calls() (switches, deploys, rollbacks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fakeController.mu.Lock()
	defer f.fakeController.mu.Unlock()
	return len(f.fakeController.calls), f.deploys, f.rollbacks
}

// Every endpoint, read or write, refuses a missing or wrong token with 401
// and a JSON error, and nothing reaches the switcher.
func TestEveryEndpointNeedsTheToken(t *testing.T) {
	ctl := &fullController{}
	srv := httptest.NewServer(New(Config{Token: "s3cret", Metrics: http.NotFoundHandler(),
		Upgrade: fakeUpgrader{}}, only(ctl, DeployConfig{UploadDir: t.TempDir()})))
	t.Cleanup(srv.Close)
	for _, ep := range []struct{ method, path, body string }{
		{"GET", "/v1/status", ""},
		{"GET", "/metrics", ""},
		{"POST", "/v1/switch", `{"to":"green"}`},
		{"POST", "/v1/deploy", `{"version":"v2"}`},
		{"POST", "/v1/rollback", ""},
		{"POST", "/v1/upgrade", ""},
		{"GET", "/v1/nope", ""},
		{"GET", "/v1/services", ""},
		{"GET", "/v1/services/default/status", ""},
		{"POST", "/v1/services/default/switch", `{"to":"green"}`},
		{"POST", "/v1/services/default/deploy", `{"version":"v2"}`},
		{"POST", "/v1/services/default/rollback", ""},
		{"POST", "/v1/reload", ""},
	} {
		for _, tok := range []string{"", "wrong", "Bearer s3cret", "S3CRET", "s3cre"} {
			code, body, hdr := call(t, ep.method, srv.URL+ep.path, tok, ep.body)
			if code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with token %q: %d; want 401 with WWW-Authenticate", ep.method, ep.path, tok, code)
				continue
			}
			errorOf(t, body)
		}
	}
	// A token in the query string or a Basic header is not a bearer token.
	code, _, _ := call(t, "GET", srv.URL+"/v1/status?token=s3cret", "", "")
	if code != http.StatusUnauthorized {
		t.Errorf("token in the query: %d; want 401", code)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/status", nil)
	req.SetBasicAuth("baton", "s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("basic auth: %v %v; want 401", resp.Status, err)
	}
	if s, d, r := ctl.calls(); s+d+r != 0 {
		t.Fatalf("unauthorised requests reached the switcher: %d switches, %d deploys, %d rollbacks", s, d, r)
	}
}

// Every POST endpoint decodes its JSON strictly: malformed JSON, unknown
// fields, a second value and oversized bodies are refused with a JSON error
// before anything runs.
func TestEveryEndpointRefusesBadBodies(t *testing.T) {
	ctl := &fullController{}
	srv := httptest.NewServer(New(Config{Token: "t", Upgrade: fakeUpgrader{}}, only(ctl, DeployConfig{})))
	t.Cleanup(srv.Close)
	huge := `{"version":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	for _, path := range []string{"/v1/switch", "/v1/deploy", "/v1/rollback", "/v1/upgrade"} {
		for _, tc := range []struct {
			name, body string
			code       int
		}{
			{"malformed", `{"to":`, 400},
			{"not an object", `["green"]`, 400},
			{"unknown field", `{"bogus":1}`, 400},
			{"trailing data", `{} {}`, 400},
			{"wrong type", `{"to":5,"version":5}`, 400},
			{"oversized", huge, 413},
			{"binary", "\x00\x01\x02", 400},
		} {
			req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer t")
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			n, _ := resp.Body.Read(buf)
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Errorf("POST %s, %s: %s; want %d (%s)", path, tc.name, resp.Status, tc.code, buf[:n])
				continue
			}
			errorOf(t, string(buf[:n]))
		}
	}
	if s, d, r := ctl.calls(); s+d+r != 0 {
		t.Fatalf("bad requests reached the switcher: %d switches, %d deploys, %d rollbacks", s, d, r)
	}
}

func TestRollbackEndpoint(t *testing.T) {
	ctl := &fullController{}
	srv := newTestServer(t, "t", ctl)
	code, lines, raw := postDeployAuth(t, srv.URL+"/v1/rollback", "t", "")
	if code != 200 || len(lines) != 3 {
		t.Fatalf("rollback: %d\n%s", code, raw)
	}
	last := lines[2]
	if last.Step != "done" || last.OK == nil || !*last.OK || last.Deploy == nil || last.Deploy.Version != "v1" || last.Deploy.PID != 77 ||
		!strings.Contains(last.Message, "rolled back to v1 on green") || len(last.Deploy.Warnings) != 1 {
		t.Errorf("last line %+v; want done, v1 on green, pid 77, one warning", last)
	}

	for _, tc := range []struct {
		err  error
		code int
		want string
	}{
		{fmt.Errorf("%w: no earlier version is recorded", switcher.ErrNothingToRollBack), 409, "nothing to roll back to"},
		{fmt.Errorf("%w: deploy to green started 2s ago", switcher.ErrBusy), 409, "another operation is running"},
		{fmt.Errorf("rollback to green: %w: write: no space left on device; nothing was changed", switcher.ErrState), 500, "no space left"},
	} {
		ctl.mu.Lock()
		ctl.rbErr = tc.err
		ctl.mu.Unlock()
		code, body, _ := call(t, "POST", srv.URL+"/v1/rollback", "t", "")
		if code != tc.code || !strings.Contains(errorOf(t, body), tc.want) {
			t.Errorf("rollback failing with %v: %d %s; want %d mentioning %q", tc.err, code, body, tc.code, tc.want)
		}
	}
	// Without a rollback-capable controller the endpoint does not exist.
	plain := newTestServer(t, "t", &fakeController{})
	if code, _, _ := call(t, "POST", plain.URL+"/v1/rollback", "t", ""); code != 404 && code != 405 {
		t.Errorf("rollback without support: %d; want 404/405", code)
	}
}

func postDeployAuth(t *testing.T, url, token, body string) (int, []StreamLine, string) {
	t.Helper()
	code, raw, _ := call(t, "POST", url, token, body)
	var lines []StreamLine
	for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
		var sl StreamLine
		if err := json.Unmarshal([]byte(l), &sl); err == nil {
			lines = append(lines, sl)
		}
	}
	return code, lines, raw
}
