package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/switcher"
)

// canaryDeployResult is what a 'baton deploy' run in the background ends with.
type canaryDeployResult struct {
	lines []admin.StreamLine
	last  admin.StreamLine
	out   string
	code  int
}

// deployAsync runs 'baton deploy --json args...' in the background: a
// canary's deploy only returns when the rollout ends.
func (b *baton) canaryDeployAsync(args ...string) <-chan canaryDeployResult {
	c := make(chan canaryDeployResult, 1)
	go func() {
		lines, last, out, code := b.deploy(args...)
		c <- canaryDeployResult{lines, last, out, code}
	}()
	return c
}

func (b *baton) canaryWaitDeploy(c <-chan canaryDeployResult) canaryDeployResult {
	b.t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(30 * time.Second):
		b.t.Fatalf("the deploy did not end; baton log:\n%s", b.proc.out.String())
		return canaryDeployResult{}
	}
}

// waitRollout waits until status shows a rollout in phase.
func (b *baton) canaryWaitRollout(phase string) *switcher.RolloutStatus {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := b.status()
		if err == nil && st.Rollout != nil && st.Rollout.Phase == phase {
			return st.Rollout
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no rollout in phase %s: %+v, %v\nbaton log:\n%s", phase, st.Rollout, err, b.proc.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getWith sends GET path with hdr on a new connection and returns the
// version that answered and the response.
func canaryGet(t *testing.T, addr, path string, hdr map[string]string) (string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-App-Version"), resp
}

// share sends n requests and returns how many version v answered.
func canaryShare(t *testing.T, addr, v string, n int) int {
	t.Helper()
	got := 0
	for range n {
		if who, _ := canaryGet(t, addr, "/", nil); who == v {
			got++
		}
	}
	return got
}

func startCanaryLoad(target string) (stop func() *loadgen.Report) {
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan *loadgen.Report, 1)
	go func() {
		c <- loadgen.Run(ctx, loadgen.Config{
			Target: target, Rate: 200, KeepAliveConns: 8,
			NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 200 * time.Millisecond, SlowMax: time.Second,
			PostFraction: 0.1,
		})
	}()
	return func() *loadgen.Report { cancel(); return <-c }
}

// TestCanaryPromoteAndAbortUnderLoad: a canary takes its share (and the
// allow-listed requests), blocks other operations, steps up on command and
// is promoted; a second one, sticky, is aborted. Under load, with slow
// requests in flight at every change, no request fails.
func TestCanaryPromoteAndAbortUnderLoad(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--drain-timeout", "10s")
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	oldC, newC := liveColours(t, b)
	stopLoad := startCanaryLoad(b.http)

	done := b.canaryDeployAsync("--artifact", appBin, "--version", "v2", "--canary", "30", "--canary-header", "X-Canary: 1")
	ro := b.canaryWaitRollout("canary")
	if ro.Percent != 30 || ro.Old != oldC || ro.New != newC || ro.Version != "v2" {
		t.Errorf("rollout status %+v", ro)
	}
	if n, got := 400, canaryShare(t, b.http, "v2", 400); math.Abs(float64(got)-120) > 5*math.Sqrt(400*0.3*0.7) {
		t.Errorf("a 30%% canary answered %d of %d requests", got, n)
	}
	for range 20 {
		if who, _ := canaryGet(t, b.http, "/", map[string]string{"X-Canary": "1"}); who != "v2" {
			t.Fatalf("an allow-listed request went to %s", who)
		}
	}
	// Nothing else runs during a rollout, and the refusal says why.
	if out, code := b.cli("switch"); code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, "rollout") {
		t.Errorf("switch during a canary: exit %d:\n%s", code, out)
	}
	if out, code := b.cli("deploy", "--artifact", appBin, "--version", "v9"); code != 1 || !strings.Contains(out, "409") {
		t.Errorf("deploy during a canary: exit %d:\n%s", code, out)
	}
	if out, code := b.cli("rollout", "--percent", "60"); code != 0 || !strings.Contains(out, "60%") {
		t.Errorf("rollout --percent 60: exit %d:\n%s", code, out)
	}
	if out, code := b.cli("status"); code != 0 || !strings.Contains(out, fmt.Sprintf("canary: rollout v2, %s → %s, 60%% of requests to %s", oldC, newC, newC)) {
		t.Errorf("status during a canary, exit %d:\n%s", code, out)
	}
	time.Sleep(300 * time.Millisecond)
	if out, code := b.cli("rollout", "--promote"); code != 0 {
		t.Fatalf("rollout --promote: exit %d:\n%s", code, out)
	}
	r := b.canaryWaitDeploy(done)
	if r.code != 0 || r.last.Deploy == nil {
		t.Fatalf("the canary's deploy exited %d after the promote:\n%s\nbaton log:\n%s", r.code, r.out, b.proc.out.String())
	}
	for _, want := range []string{"canary", "promote", "swap", "drain", "stop", "done"} {
		if !strings.Contains(steps(r.lines), want) {
			t.Errorf("steps %q lack %s", steps(r.lines), want)
		}
	}
	v2 := r.last.Deploy.PID
	canaryWaitGone(t, v1)
	if who, _ := canaryGet(t, b.http, "/", nil); who != "v2" {
		t.Errorf("after the promote %s answered", who)
	}

	// A sticky canary, aborted.
	done = b.canaryDeployAsync("--artifact", appBin, "--version", "v3", "--canary", "50", "--sticky")
	b.canaryWaitRollout("canary")
	who, resp := canaryGet(t, b.http, "/", nil)
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == switcher.DefaultStickyCookie {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		t.Fatalf("a sticky canary set no cookie: %v", resp.Header)
	}
	for range 20 {
		if again, _ := canaryGet(t, b.http, "/", map[string]string{"Cookie": cookie}); again != who {
			t.Fatalf("a client with %s got %s, then %s", cookie, who, again)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if out, code := b.cli("rollout", "--abort"); code != 0 {
		t.Fatalf("rollout --abort: exit %d:\n%s", code, out)
	}
	r = b.canaryWaitDeploy(done)
	if r.code != 1 || !strings.Contains(r.out, "aborted") || !strings.Contains(r.out, newC+" keeps serving") {
		t.Errorf("the aborted canary's deploy exited %d:\n%s", r.code, r.out)
	}
	if r.last.Deploy != nil {
		canaryWaitGone(t, r.last.Deploy.PID)
	}
	if gone(v2) {
		t.Error("the abort stopped the old version")
	}
	for range 10 {
		if who, _ := canaryGet(t, b.http, "/", map[string]string{"Cookie": cookie}); who != "v2" {
			t.Fatalf("after the abort %s answered", who)
		}
	}
	if out, code := b.cli("rollout", "--abort"); code != 1 || !strings.Contains(out, "409") {
		t.Errorf("rollout --abort without a rollout: exit %d:\n%s", code, out)
	}

	time.Sleep(200 * time.Millisecond)
	rep := stopLoad()
	t.Logf("load summary:\n%s", rep.Summary())
	failOnFailures(t, rep, "", b.proc.out.String())
	if vs := strings.Join(rep.Versions(), " "); !strings.Contains(vs, "v1") || !strings.Contains(vs, "v2") || !strings.Contains(vs, "v3") {
		t.Errorf("the load saw versions %q; want v1, v2 and v3", vs)
	}
}

// liveColours returns the live colour and the idle one.
func liveColours(t *testing.T, b *baton) (live, idle string) {
	t.Helper()
	st, err := b.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Live == "blue" {
		return "blue", "green"
	}
	return "green", "blue"
}

func canaryWaitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failingApp returns an artifact that runs the sample app with --fail-file,
// and the file: while it exists, the app fails every request but /health.
func canaryFailingApp(t *testing.T) (artifact, failFile string) {
	t.Helper()
	failFile = filepath.Join(t.TempDir(), "fail")
	return writeScript(t, "failing.sh", fmt.Sprintf("exec %s \"$@\" --fail-file %s\n", appBin, failFile)), failFile
}

// TestCanaryRollsBackOnItsOwn: a canary that answers well is left alone;
// once it starts answering 500, the judge aborts it, the CLI waiting on the
// deploy exits 1 with the reason, and the metrics count the rollback.
func TestCanaryRollsBackOnItsOwn(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	if _, _, out, code := b.deploy("--artifact", appBin, "--version", "v1"); code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	artifact, failFile := canaryFailingApp(t)
	oldC, _ := liveColours(t, b)
	stopLoad := startCanaryLoad(b.http)
	defer stopLoad()

	done := b.canaryDeployAsync("--artifact", artifact, "--version", "v2", "--canary", "50", "--min-requests", "30", "--judge-window", "3s")
	b.canaryWaitRollout("canary")
	// Healthy: several judge rounds (one a second), plenty of answers.
	time.Sleep(2500 * time.Millisecond)
	ro := b.canaryWaitRollout("canary")
	if ro.Judge == nil || ro.Judge.Verdict != "ok" {
		t.Fatalf("a healthy canary's judge: %+v", ro.Judge)
	}
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := b.canaryWaitDeploy(done)
	t.Logf("rolled back %s after the canary started failing", time.Since(start).Round(time.Millisecond))
	if r.code != 1 || !strings.Contains(r.out, "rolled back") || !strings.Contains(r.out, "5xx") || !strings.Contains(r.out, oldC+" keeps serving") {
		t.Fatalf("deploy of a failing canary exited %d:\n%s", r.code, r.out)
	}
	if r.last.Deploy != nil {
		canaryWaitGone(t, r.last.Deploy.PID)
	}
	if who, _ := canaryGet(t, b.http, "/", nil); who != "v1" {
		t.Errorf("after the rollback %s answered", who)
	}
	st, _ := b.status()
	if st.Rollout != nil || st.Live != oldC || st.History[len(st.History)-1].OK {
		t.Errorf("status after the rollback: live %s, rollout %+v, last %+v", st.Live, st.Rollout, st.History[len(st.History)-1])
	}
	req, _ := http.NewRequest("GET", "http://"+b.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`baton_rollbacks_total{reason="error_rate",service="default"} 1`, `baton_rollouts_total{result="rolled_back",service="default"} 1`, `baton_canary_percent{color="blue",service="default"} 0`, `baton_canary_percent{color="green",service="default"} 0`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestCanaryWatchAfterDeploy: with --watch the old instance runs on after the swap;
// a new version that starts failing is rolled back to it, and one that
// stays healthy has the old one stopped when the watch ends.
func TestCanaryWatchAfterDeploy(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	oldC, _ := liveColours(t, b)
	artifact, failFile := canaryFailingApp(t)
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stopLoad := startCanaryLoad(b.http)
	defer stopLoad()

	_, last, out, code = b.deploy("--artifact", artifact, "--version", "v2", "--watch", "20s", "--min-requests", "20")
	if code != 1 || !strings.Contains(out, "rolled back") || !strings.Contains(out, oldC+" is live again") {
		t.Fatalf("deploy --watch of a failing version exited %d:\n%s", code, out)
	}
	if gone(v1) {
		t.Fatal("the old instance was stopped although the watch rolled back to it")
	}
	canaryWaitGone(t, last.Deploy.PID)
	if who, _ := canaryGet(t, b.http, "/", nil); who != "v1" {
		t.Errorf("after the rollback %s answered", who)
	}

	os.Remove(failFile)
	start := time.Now()
	_, _, out, code = b.deploy("--artifact", appBin, "--version", "v3", "--watch", "2s")
	if code != 0 || !strings.Contains(out, "passed the 2s watch") {
		t.Fatalf("deploy --watch of a healthy version exited %d:\n%s", code, out)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("deploy --watch 2s returned after %s", took)
	}
	canaryWaitGone(t, v1)
}
