package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// fakeRoller is a fakeController that also takes rollouts.
type fakeRoller struct {
	fakeController
	rmu      sync.Mutex
	rollouts []switcher.RolloutRequest
	steers   []switcher.RolloutCommand
	steerErr error
}

func (f *fakeRoller) Rollout(ctx context.Context, req switcher.RolloutRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	f.rmu.Lock()
	f.rollouts = append(f.rollouts, req)
	f.rmu.Unlock()
	if f.err != nil {
		return switcher.DeployResult{}, f.err
	}
	emit(switcher.Event{Time: time.Now(), Step: "canary", Message: "10% of requests to green"})
	res := switcher.DeployResult{Result: switcher.Result{ID: "r", From: switcher.Blue, To: switcher.Green}, Version: req.Version}
	return res, f.fail
}

func (f *fakeRoller) Steer(cmd switcher.RolloutCommand) (switcher.RolloutStatus, error) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	f.steers = append(f.steers, cmd)
	return switcher.RolloutStatus{Phase: "canary", Percent: cmd.Percent}, f.steerErr
}

func TestRolloutRequestIsConverted(t *testing.T) {
	f := &fakeRoller{}
	srv := newTestServer(t, "tok", f)
	body := `{"version":"v2","steps":[10,25,50,100],"step_interval":"2m","sticky":true,
		"canary_header":"X-Canary: 1","canary_cookie":"tester=yes","watch":"5m","max_error_rate":0.02,"max_p99":"500ms","min_requests":50,"judge_window":"30s"}`
	code, out, _ := call(t, "POST", srv.URL+"/v1/rollout", "tok", body)
	if code != 200 || !strings.Contains(out, `"ok":true`) || !strings.Contains(out, "rolled out v2") {
		t.Fatalf("POST /v1/rollout: %d\n%s", code, out)
	}
	got := f.rollouts[0]
	want := switcher.RolloutRequest{
		DeployRequest: switcher.DeployRequest{Version: "v2"},
		Watch:         switcher.Watch{Duration: 5 * time.Minute, Thresholds: switcher.Thresholds{MaxErrorRate: 0.02, MaxP99: 500 * time.Millisecond, MinRequests: 50, Window: 30 * time.Second}},
		Steps:         []int{10, 25, 50, 100}, StepInterval: 2 * time.Minute,
		Rules: switcher.SplitRules{StickyCookie: switcher.DefaultStickyCookie, AllowHeader: "X-Canary", AllowHeaderValue: "1",
			AllowCookie: "tester", AllowCookieValue: "yes"},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("rollout request\n got %s\nwant %s", gb, wb)
	}
}

func TestRolloutRefusals(t *testing.T) {
	f := &fakeRoller{}
	srv := newTestServer(t, "tok", f)
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"steps":[10]}`, 400, "version"},
		{`{"version":"v2","steps":[10],"step_interval":"soon"}`, 400, "step_interval"},
		{`{"version":"v2","steps":[10],"canary_header":"X-Canary"}`, 400, "canary_header"},
		{`{"version":"v2","steps":[10],"canary_cookie":"tester"}`, 400, "canary_cookie"},
		{`{"version":"v2","steps":[10],"watch":"-1m"}`, 400, "watch"},
		{`{"version":"v2","steps":[10],"max_error_rate":5}`, 400, "max_error_rate"},
		{`{"version":"v2","bogus":1}`, 400, "bogus"},
	} {
		code, out, _ := call(t, "POST", srv.URL+"/v1/rollout", "tok", tc.body)
		if code != tc.code || !strings.Contains(errorOf(t, out), tc.want) {
			t.Errorf("POST %s: %d %s; want %d mentioning %q", tc.body, code, out, tc.code, tc.want)
		}
	}
	f.err = switcher.ErrBusy
	if code, out, _ := call(t, "POST", srv.URL+"/v1/rollout", "tok", `{"version":"v2","steps":[10]}`); code != http.StatusConflict {
		t.Errorf("busy: %d %s; want 409", code, out)
	}
	if code, _, _ := call(t, "GET", srv.URL+"/v1/rollout", "tok", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/rollout: %d; want 405", code)
	}
	if code, _, _ := call(t, "POST", srv.URL+"/v1/rollout", "", `{"version":"v2","steps":[10]}`); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d; want 401", code)
	}
}

func TestRolloutUploadQuery(t *testing.T) {
	r := RolloutRequest{DeployRequest: DeployRequest{Version: "v2", SHA256: "ab", WatchRequest: WatchRequest{Watch: "1m", MaxErrorRate: 0.05, MinRequests: 10}},
		Steps: []int{5, 50}, StepInterval: "30s", StickyHeader: "X-User", CanaryCookie: "t=1"}
	back, err := rolloutFromQuery(r.Query("app.jar"))
	if err != nil {
		t.Fatal(err)
	}
	r.Artifact = "app.jar"
	gb, _ := json.Marshal(back)
	wb, _ := json.Marshal(r)
	if string(gb) != string(wb) {
		t.Errorf("query round trip\n got %s\nwant %s", gb, wb)
	}
	if _, err := ParseSteps("10,x"); err == nil {
		t.Error("ParseSteps(10,x) = nil error")
	}
}

func TestSteer(t *testing.T) {
	f := &fakeRoller{}
	srv := newTestServer(t, "tok", f)
	code, out, _ := call(t, "POST", srv.URL+"/v1/rollout/percent", "tok", `{"percent":50}`)
	var sr SteerResponse
	if code != 200 || json.Unmarshal([]byte(out), &sr) != nil || sr.Rollout.Percent != 50 || !strings.Contains(sr.Message, "50%") {
		t.Fatalf("percent: %d %s", code, out)
	}
	for _, a := range []string{"promote", "abort"} {
		if code, out, _ := call(t, "POST", srv.URL+"/v1/rollout/"+a, "tok", ""); code != 200 {
			t.Errorf("%s: %d %s", a, code, out)
		}
	}
	if got := f.steers; len(got) != 3 || got[0].Action != "percent" || got[1].Action != "promote" || got[2].Action != "abort" {
		t.Errorf("steers %+v", got)
	}
	if code, _, _ := call(t, "POST", srv.URL+"/v1/rollout/percent", "tok", `{}`); code != 400 {
		t.Errorf("percent without a percent: %d; want 400", code)
	}
	if code, _, _ := call(t, "POST", srv.URL+"/v1/rollout/pause", "tok", ""); code != 404 {
		t.Errorf("unknown action: %d; want 404", code)
	}
	f.steerErr = switcher.ErrNoRollout
	if code, out, _ := call(t, "POST", srv.URL+"/v1/rollout/abort", "tok", ""); code != http.StatusConflict || !strings.Contains(out, "no rollout") {
		t.Errorf("abort without a rollout: %d %s; want 409", code, out)
	}
}

func TestWatchOnSwitchAndDeploy(t *testing.T) {
	f := &fakeController{}
	srv := newTestServer(t, "tok", f)
	if code, out, _ := call(t, "POST", srv.URL+"/v1/switch", "tok", `{"watch":"90s","max_p99":"1s"}`); code != 200 {
		t.Fatalf("switch with a watch: %d %s", code, out)
	}
	if w := f.calls[0].Watch; w.Duration != 90*time.Second || w.MaxP99 != time.Second {
		t.Errorf("switch watch %+v", w)
	}
	if code, _, _ := call(t, "POST", srv.URL+"/v1/switch", "tok", `{"watch":"later"}`); code != 400 {
		t.Errorf("switch with a bad watch: %d; want 400", code)
	}
}
