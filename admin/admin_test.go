package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// fakeController stands in for the switcher, whose own tests cover the
// switch logic; here we test the HTTP contract.
type fakeController struct {
	mu    sync.Mutex
	calls []switcher.SwitchRequest
	err   error // returned before any event when set
	fail  error // returned after events when set
}

func (f *fakeController) Status() switcher.Status {
	return switcher.Status{Live: "blue", Upstreams: []switcher.UpstreamStatus{{Color: "blue", Addr: "127.0.0.1:8080", Live: true}}}
}

func (f *fakeController) Switch(ctx context.Context, req switcher.SwitchRequest, emit func(switcher.Event)) (switcher.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.mu.Unlock()
	if f.err != nil {
		return switcher.Result{}, f.err
	}
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "switch"})
	emit(switcher.Event{Time: time.Now(), Step: "health", Message: "try 1: ok"})
	if f.fail != nil {
		return switcher.Result{From: switcher.Blue, To: switcher.Green}, f.fail
	}
	emit(switcher.Event{Time: time.Now(), Step: "swap", Message: "green is live"})
	return switcher.Result{ID: "x", From: switcher.Blue, To: switcher.Green, Drained: 4}, nil
}

// only is the Services of a baton with ctl as its one service, "default".
func only(ctl Controller, dc DeployConfig) Services {
	return One(Service{Name: "default", Controller: ctl, Deploy: dc})
}

func newTestServer(t *testing.T, token string, ctl Controller) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Config{Token: token, Version: "test"}, only(ctl, DeployConfig{})))
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func errorOf(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not a JSON error", body)
	}
	return e.Error
}

func TestTokenRequired(t *testing.T) {
	ctl := &fakeController{}
	srv := newTestServer(t, "s3cret", ctl)
	for _, tok := range []string{"", "wrong", "s3cre", "s3cret2"} {
		code, body, hdr := call(t, "POST", srv.URL+"/v1/switch", tok, "")
		if code != http.StatusUnauthorized {
			t.Errorf("token %q: status %d; want 401", tok, code)
		}
		errorOf(t, body)
		if hdr.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
	}
	if len(ctl.calls) != 0 {
		t.Fatalf("unauthorised requests reached the switcher: %v", ctl.calls)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/v1/status", "s3cret", ""); code != 200 {
		t.Fatalf("right token: status %d; want 200", code)
	}
}

func TestNoTokenAcceptsLoopbackOnly(t *testing.T) {
	s := New(Config{}, only(&fakeController{}, DeployConfig{}))
	for addr, want := range map[string]int{"127.0.0.1:5000": 200, "[::1]:5000": 200, "203.0.113.9:5000": 403} {
		req := httptest.NewRequest("GET", "/v1/status", nil)
		req.RemoteAddr = addr
		req.Host = "127.0.0.1:9900"
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("from %s: status %d; want %d", addr, rec.Code, want)
		}
	}
}

func TestCheckListenAddr(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		token bool
		ok    bool
	}{
		{"127.0.0.1:9900", false, true},
		{"[::1]:9900", false, true},
		{"localhost:9900", false, true},
		{"0.0.0.0:9900", false, false},
		{":9900", false, false},
		{"10.0.0.5:9900", false, false},
		{"0.0.0.0:9900", true, true},
	} {
		err := CheckListenAddr(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckListenAddr(%q, token=%v) = %v; want ok=%v", tc.addr, tc.token, err, tc.ok)
		}
	}
}

func TestBadRequests(t *testing.T) {
	ctl := &fakeController{}
	srv := newTestServer(t, "t", ctl)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"malformed json", "POST", "/v1/switch", `{"to":`, 400},
		{"unknown field", "POST", "/v1/switch", `{"colour":"green"}`, 400},
		{"bad colour", "POST", "/v1/switch", `{"to":"purple"}`, 400},
		{"trailing data", "POST", "/v1/switch", `{"to":"green"} {}`, 400},
		{"oversized", "POST", "/v1/switch", `{"to":"` + strings.Repeat("x", MaxBodyBytes+10) + `"}`, 413},
		{"unknown path", "GET", "/v1/nope", "", 404},
		{"wrong method", "GET", "/v1/switch", "", 405},
	} {
		code, body, _ := call(t, tc.method, srv.URL+tc.path, "t", tc.body)
		if code != tc.want {
			t.Errorf("%s: status %d; want %d (body %s)", tc.name, code, tc.want, body)
			continue
		}
		errorOf(t, body)
	}
	if len(ctl.calls) != 0 {
		t.Fatalf("bad requests reached the switcher: %v", ctl.calls)
	}
}

func TestBusyIs409(t *testing.T) {
	srv := newTestServer(t, "t", &fakeController{err: fmt.Errorf("%w: switch to green", switcher.ErrBusy)})
	code, body, _ := call(t, "POST", srv.URL+"/v1/switch", "t", "")
	if code != http.StatusConflict || !strings.Contains(errorOf(t, body), "switch to green") {
		t.Fatalf("status %d body %s; want 409 naming the running switch", code, body)
	}
}

func TestSwitchStreamsNDJSON(t *testing.T) {
	ctl := &fakeController{}
	srv := newTestServer(t, "t", ctl)
	code, body, hdr := call(t, "POST", srv.URL+"/v1/switch", "t", `{"to":"green"}`)
	if code != 200 || hdr.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d content-type %q", code, hdr.Get("Content-Type"))
	}
	var steps []string
	var last StreamLine
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var l StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		steps = append(steps, l.Step)
		last = l
	}
	if got := strings.Join(steps, " "); got != "start health swap done" {
		t.Errorf("steps %q; want start health swap done", got)
	}
	if last.OK == nil || !*last.OK || last.Result == nil || last.Result.To != "green" || last.Result.Drained != 4 {
		t.Errorf("last line %+v; want ok with result to green, drained 4", last)
	}
	if ctl.calls[0].To == nil || *ctl.calls[0].To != switcher.Green {
		t.Errorf("switcher got %+v; want To green", ctl.calls[0])
	}
}

func TestFailedSwitchEndsStreamWithFailure(t *testing.T) {
	srv := newTestServer(t, "t", &fakeController{fail: fmt.Errorf("%w: 0/2 passes: status 500", switcher.ErrHealth)})
	code, body, _ := call(t, "POST", srv.URL+"/v1/switch", "t", "")
	if code != 200 {
		t.Fatalf("status %d; want 200 (the stream had started)", code)
	}
	lines := strings.Split(strings.TrimSpace(body), "\n")
	var last StreamLine
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Step != "failed" || last.OK == nil || *last.OK || !strings.Contains(last.Error, "status 500") {
		t.Fatalf("last line %+v; want failed with the reason", last)
	}
}

func TestStatus(t *testing.T) {
	srv := newTestServer(t, "t", &fakeController{})
	code, body, _ := call(t, "GET", srv.URL+"/v1/status", "t", "")
	var st StatusResponse
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil {
		t.Fatalf("status %d body %s", code, body)
	}
	if st.Live != "blue" || st.BatonVersion != "test" || len(st.Upstreams) != 1 {
		t.Fatalf("status %+v", st)
	}
}

func FuzzDecodeSwitchRequest(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"to":"green"}`, `{"to":1}`, `[`, `{"to":"blue"}{}`, "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		// Every POST body goes through decodeBody; try each request type.
		for _, v := range []any{&SwitchRequest{}, &DeployRequest{}, &rollbackRequest{}, &upgradeRequest{}} {
			req := httptest.NewRequest("POST", "/v1/switch", strings.NewReader(body))
			rec := httptest.NewRecorder()
			err := decodeBody(rec, req, v)
			if err != nil {
				if _, ok := err.(*statusError); !ok {
					t.Fatalf("decodeBody(%q) into %T returned %T without an HTTP status", body, v, err)
				}
				continue
			}
			if len(body) > MaxBodyBytes {
				t.Fatalf("decodeBody accepted a body of %d bytes into %T; the limit is %d", len(body), v, MaxBodyBytes)
			}
		}
	})
}

type fakeUpgrader struct{ err error }

func (f fakeUpgrader) Upgrade(ctx context.Context, emit func(switcher.Event)) error {
	if errors.Is(f.err, switcher.ErrBusy) {
		return f.err
	}
	emit(switcher.Event{Step: "start", Message: "starting new baton"})
	return f.err
}

func TestUpgradeEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		code     int
		lastStep string
	}{
		{"ok", nil, 200, "done"},
		{"child failed", errors.New("child exited"), 200, "failed"},
		{"busy", fmt.Errorf("%w: deploy to green", switcher.ErrBusy), 409, ""},
	} {
		srv := httptest.NewServer(New(Config{Token: "t", Upgrade: fakeUpgrader{tc.err}}, only(&fakeController{}, DeployConfig{})))
		code, body, _ := call(t, "POST", srv.URL+"/v1/upgrade", "t", "")
		srv.Close()
		if code != tc.code {
			t.Errorf("%s: status %d; want %d (%s)", tc.name, code, tc.code, body)
			continue
		}
		if tc.lastStep == "" {
			errorOf(t, body)
			continue
		}
		lines := strings.Split(strings.TrimSpace(body), "\n")
		var last StreamLine
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Step != tc.lastStep {
			t.Errorf("%s: last line %q; want step %s", tc.name, lines[len(lines)-1], tc.lastStep)
		}
	}
	// Without an upgrader configured the endpoint does not exist.
	srv := newTestServer(t, "t", &fakeController{})
	if code, _, _ := call(t, "POST", srv.URL+"/v1/upgrade", "t", ""); code != 404 && code != 405 {
		t.Errorf("upgrade without upgrader: status %d; want 404/405", code)
	}
}
