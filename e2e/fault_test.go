package e2e

// The fault-injection suite (issue 6): real baton, real app processes, and
// each fault made to happen for real. Every case checks what users see
// through the public port (requests keep succeeding, or fail with a clear
// 502/503/504 while nothing can serve and recover by themselves), that no
// state is lost, and that nothing that should have been stopped still runs.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/launcher"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// faultLoad is the steady load of the fault cases: keep-alive GETs, new
// connections and POSTs, no slow requests (they would only lengthen every
// drain).
func faultLoad(target string) loadgen.Config {
	return loadgen.Config{Target: target, Rate: 150, KeepAliveConns: 6, NewConnFraction: 0.1, PostFraction: 0.2}
}

// startLoad runs cfg until the returned function is called, which returns
// the report.
func startLoad(t *testing.T, cfg loadgen.Config) (stop func() *loadgen.Report) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reportc := make(chan *loadgen.Report, 1)
	go func() { reportc <- loadgen.Run(ctx, cfg) }()
	var once sync.Once
	var rep *loadgen.Report
	stop = func() *loadgen.Report {
		once.Do(func() {
			cancel()
			rep = <-reportc
		})
		return rep
	}
	t.Cleanup(func() { stop() })
	time.Sleep(200 * time.Millisecond)
	return stop
}

// noFailures fails the test if rep has a failed request.
func noFailures(t *testing.T, b *baton, what string, rep *loadgen.Report) {
	t.Helper()
	t.Logf("load during %s:\n%s", what, rep.Summary())
	if rep.Total() < 30 {
		t.Fatalf("%s: only %d requests were sent; the load did not run", what, rep.Total())
	}
	failOnFailures(t, rep, what+": ", b.proc.out.String())
}

// instances returns the app instances that this baton's launcher started
// and that still run, by PID, with their versions: a process whose working
// directory is under the state directory and whose environment carries the
// launcher's BATON_INSTANCE marker.
func instances(t *testing.T, stateDir string) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !launcher.Alive(pid) {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, stateDir+"/") {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !strings.Contains(string(env), "\x00BATON_INSTANCE=") {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if v, ok := strings.CutPrefix(kv, "BATON_VERSION="); ok {
				found[pid] = v
			}
		}
	}
	return found
}

// wantInstances fails the test unless exactly the given instances run.
func wantInstances(t *testing.T, b *baton, want map[int]string) {
	t.Helper()
	// An instance that was just stopped may take a moment to be reaped.
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := instances(t, b.state)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("running instances %v; want exactly %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killGroup kills pid's process group at the end of the test: an instance
// whose deploy never reported it.
func killGroup(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
}

// readState reads the default service's entry of the state file as it is
// on disk, failing the test if the file is not whole, valid JSON.
func readState(t *testing.T, dir string) state.State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, state.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version  int                    `json:"version"`
		Services map[string]state.State `json:"services"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("state file is not valid JSON (%v):\n%s", err, b)
	}
	if f.Version != state.CurrentVersion {
		t.Fatalf("state file has version %d; want %d:\n%s", f.Version, state.CurrentVersion, b)
	}
	return f.Services[state.DefaultService]
}

// waitStep polls status until the running operation has reached step.
func waitStep(t *testing.T, b *baton, step string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := b.status(); err == nil && st.Operation != nil && st.Operation.Step == step {
			return
		}
		if time.Now().After(deadline) {
			st, err := b.status()
			t.Fatalf("the operation never reached step %s: status %+v, %v", step, st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bgDeploy runs 'baton deploy --json args...' in the background.
func bgDeploy(b *baton, args ...string) <-chan string {
	out := make(chan string, 1)
	go func() {
		cmd := exec.Command(batonBin, append([]string{"deploy", "--json"}, args...)...)
		cmd.Env = append(os.Environ(), "BATON_ADMIN=http://"+b.admin, "BATON_ADMIN_TOKEN="+b.token)
		o, _ := cmd.CombinedOutput()
		out <- fmt.Sprintf("exit %d\n%s", cmd.ProcessState.ExitCode(), o)
	}()
	return out
}

// sigkill kills baton the hard way and waits for it to be gone.
func (b *baton) sigkill() {
	b.t.Helper()
	if err := b.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		b.t.Fatal(err)
	}
	b.proc.waitExit(b.t, 5*time.Second)
}

// lastHistory returns the newest entry of the history.
func lastHistory(t *testing.T, st admin.StatusResponse) state.Deploy {
	t.Helper()
	if len(st.History) == 0 {
		t.Fatal("the history is empty")
	}
	return st.History[len(st.History)-1]
}

// upstream returns the status of colour c.
func upstream(st admin.StatusResponse, c string) switcher.UpstreamStatus {
	for _, u := range st.Upstreams {
		if u.Color == c {
			return u
		}
	}
	return switcher.UpstreamStatus{}
}

func stepTime(t *testing.T, lines []admin.StreamLine, step string) time.Time {
	t.Helper()
	for _, l := range lines {
		if l.Step == step {
			return l.Time
		}
	}
	t.Fatalf("no %s step in %q", step, steps(lines))
	return time.Time{}
}

// TestFaultNewInstance: the new version never gets healthy, crashes while
// it starts, crashes right after the swap, or passes its health checks but
// fails every real request. Users never see the first three; the fourth is
// visible in status and the metrics, and 'baton rollback' undoes it.
func TestFaultNewInstance(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--health-deadline", "1500ms", "--drain-timeout", "10s", "--stop-timeout", "2s")
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	stopLoad := startLoad(t, faultLoad(b.http))

	failFile := filepath.Join(t.TempDir(), "fail")
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sick := writeScript(t, "sick.sh", fmt.Sprintf("exec %s \"$@\" --fail-health-file %s\n", appBin, failFile))
	_, last, out, code = b.deploy("--artifact", sick, "--version", "v2-sick")
	if code != 1 || !strings.Contains(out, "health check failed") || !strings.Contains(out, "green keeps serving") {
		t.Errorf("never healthy: exit %d:\n%s\nwant 1, health check failed, green keeps serving", code, out)
	}
	sickPID := last.Deploy.PID

	crash := writeScript(t, "crash.sh", "echo 'FATAL: no database' >&2\nexit 3\n")
	_, _, out, code = b.deploy("--artifact", crash, "--version", "v2-crash")
	if code != 1 || !strings.Contains(out, "exited during start-up") || !strings.Contains(out, "FATAL: no database") {
		t.Errorf("crash during start-up: exit %d:\n%s", code, out)
	}
	noFailures(t, b, "failed deploys", stopLoad())

	// Crash right after the swap: a slow request keeps the drain of v1
	// going; the new instance dies during it. baton routes back to v1,
	// which was never stopped and finishes the slow request.
	stopLoad = startLoad(t, faultLoad(b.http))
	slow := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + b.http + "/slow?ms=3000")
		if err != nil {
			slow <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}()
	time.Sleep(100 * time.Millisecond)
	crashy := writeScript(t, "crashy.sh", fmt.Sprintf("exec %s \"$@\" --crash-after 1200ms\n", appBin))
	lines, last, out, code := b.deploy("--artifact", crashy, "--version", "v2-crashy")
	if code != 1 || !strings.Contains(out, "exited right after the swap") || !strings.Contains(steps(lines), "swap persist drain") || !strings.Contains(steps(lines), "drain swap_back log failed") {
		t.Fatalf("crash after the swap: exit %d, steps %q:\n%s", code, steps(lines), out)
	}
	swapped, back := stepTime(t, lines, "swap"), stepTime(t, lines, "swap_back")
	if got := <-slow; got != "200 v1" {
		t.Errorf("the slow request on v1 during the drain got %q; want 200 v1 (v1 must not be stopped)", got)
	}
	rep := stopLoad()
	t.Logf("load during the crash after the swap (swap %s, back %s):\n%s", swapped.Format("15:04:05.000"), back.Format("15:04:05.000"), rep.Summary())
	for _, r := range rep.Failures() {
		// Only a request that the new instance had accepted when it died
		// may fail, and then with a clear 502.
		if r.Status != http.StatusBadGateway || r.Start.Before(swapped.Add(-50*time.Millisecond)) || r.Start.After(back.Add(50*time.Millisecond)) {
			t.Errorf("failed outside the crash or not with a 502: %+v", r)
		}
	}
	if n := len(rep.Failures()); n > 5 {
		t.Errorf("%d requests failed around the crash; want only the few in flight on the dying instance", n)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" || gone(v1) {
		t.Fatalf("after the swap back served by %q (v1 pid %d gone: %v); want v1", v, v1, gone(v1))
	}

	// Healthy to its probe, broken to users: the deploy succeeds (nothing
	// baton checks fails), and status and the metrics show the 500s.
	broken := writeScript(t, "broken.sh", fmt.Sprintf("exec %s \"$@\" --fail-requests\n", appBin))
	_, last, out, code = b.deploy("--artifact", broken, "--version", "v3-broken")
	if code != 0 {
		t.Fatalf("deploy of an app that fails real requests exited %d:\n%s", code, out)
	}
	v3 := last.Deploy.PID
	for range 10 {
		if c, _, _ := get(t, b.http, "/"); c != 500 {
			t.Fatalf("GET / through v3-broken: %d; want the app's 500", c)
		}
	}
	st, err := b.status()
	if err != nil {
		t.Fatal(err)
	}
	if tr := upstream(st, "blue").Traffic; tr == nil || tr.Status5xx < 10 || tr.Requests < tr.Status5xx {
		t.Errorf("status traffic of blue %+v; want the 500s counted", tr)
	}
	if out, code := b.cli("status"); code != 0 || !strings.Contains(out, "blue answered") || !strings.Contains(out, "with 5xx") {
		t.Errorf("status output does not show the 5xx answers:\n%s", out)
	}
	if n := metricValue(t, b, `baton_http_requests_total{code="5xx",color="blue",method="GET",service="default"}`); n < 10 {
		t.Errorf("metrics count %v 5xx GETs on blue; want at least 10", n)
	}

	// The way out: roll back to v1, whose instance was stopped, by starting
	// its release again.
	_, last, out, code = b.cliLines("rollback", "--json")
	if code != 0 || !strings.Contains(out, "starting v1 again") || last.Deploy == nil || last.Deploy.Version != "v1" {
		t.Fatalf("rollback exited %d:\n%s", code, out)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("after the rollback served by %q; want v1", v)
	}
	if h := lastHistory(t, mustStatus(t, b)); h.Kind != "rollback" || !h.OK || h.Version != "v1" {
		t.Errorf("last history entry %+v; want an ok rollback to v1", h)
	}
	killGroup(t, last.Deploy.PID)
	for _, pid := range []int{v1, sickPID, v3} {
		if !gone(pid) {
			t.Errorf("pid %d still runs", pid)
		}
	}
	wantInstances(t, b, map[int]string{last.Deploy.PID: "v1"})
}

// cliLines runs a streaming client command with --json and returns its lines.
func (b *baton) cliLines(args ...string) (lines []admin.StreamLine, last admin.StreamLine, out string, code int) {
	b.t.Helper()
	out, code = b.cli(args...)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var sl admin.StreamLine
		if json.Unmarshal([]byte(l), &sl) != nil {
			continue
		}
		lines = append(lines, sl)
		if sl.OK != nil {
			last = sl
		}
	}
	return lines, last, out, code
}

func mustStatus(t *testing.T, b *baton) admin.StatusResponse {
	t.Helper()
	st, err := b.status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// metricValue returns the value of the sample named series (with its
// labels, as the text format prints them) from the admin API's /metrics.
func metricValue(t *testing.T, b *baton, series string) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+b.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// TestFaultOldInstance: the old instance ignores SIGTERM (killed after
// --stop-timeout), dies while it is being drained, or is already gone when
// the deploy starts.
func TestFaultOldInstance(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--stop-timeout", "1s", "--drain-timeout", "10s", "--retry-timeout", "300ms")
	b.start()
	stuck := writeScript(t, "stuck.sh", fmt.Sprintf("exec %s \"$@\" --ignore-term\n", appBin))
	_, last, out, code := b.deploy("--artifact", stuck, "--version", "v1-stuck")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	stopLoad := startLoad(t, faultLoad(b.http))

	_, last, out, code = b.deploy("--artifact", appBin, "--version", "v2")
	if code != 0 || !strings.Contains(last.Deploy.Stopped, "ignored SIGTERM for 1s; killed") {
		t.Fatalf("deploy over an instance that ignores SIGTERM: exit %d, stopped %q:\n%s", code, last.Deploy.Stopped, out)
	}
	if !gone(v1) {
		t.Errorf("v1 (pid %d) survived the SIGKILL", v1)
	}
	v2 := last.Deploy.PID

	// v2 dies while the deploy of v3 drains it: the drain ends as soon as
	// the request it waited for has failed, and the stop finds it gone.
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + b.http + "/slow?ms=1500")
		if err != nil {
			slow <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(100 * time.Millisecond)
	result := bgDeploy(b, "--artifact", appBin, "--version", "v3")
	waitStep(t, b, "drain")
	if err := syscall.Kill(-v2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := <-result
	if !strings.HasPrefix(r, "exit 0") || !strings.Contains(r, "had already exited") {
		t.Fatalf("deploy whose old instance died during the drain:\n%s", r)
	}
	// The one request the dead app had accepted gets a 502, not a hang,
	// unless it had gone out on a reused keep-alive connection: then, as a
	// GET with no answer yet, it is sent again, to the live app.
	if got := <-slow; got != http.StatusBadGateway && got != http.StatusOK {
		t.Errorf("the request in flight on the killed app got %d; want 502 (or 200 from the replay on v3)", got)
	}
	noFailures(t, b, "deploys over a stuck and a dying old instance", stopLoad())
	v3 := upstream(mustStatus(t, b), "green").Instance.PID
	killGroup(t, v3)

	// v3 is already gone when the next deploy starts: users get a clear 502
	// until the new version serves, then everything works again.
	if err := syscall.Kill(-v3, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for !gone(v3) {
		time.Sleep(10 * time.Millisecond)
	}
	c, body, _ := get(t, b.http, "/")
	if c != http.StatusBadGateway || !strings.Contains(body, "the app is not answering") {
		t.Errorf("with the live app dead: %d %q; want 502 saying the app is not answering", c, body)
	}
	_, last, out, code = b.deploy("--artifact", appBin, "--version", "v4")
	if code != 0 || !strings.Contains(last.Deploy.Stopped, "already exited") {
		t.Fatalf("deploy over a dead instance: exit %d, stopped %q:\n%s", code, last.Deploy.Stopped, out)
	}
	if _, _, v := get(t, b.http, "/"); v != "v4" {
		t.Fatalf("served by %q; want v4", v)
	}
	wantInstances(t, b, map[int]string{last.Deploy.PID: "v4"})
}

// TestFaultBatonKilledMidDeploy kills baton with SIGKILL during a deploy,
// once before the swap and once during the drain, and restarts it: it comes
// back with the right live colour, adopts the instances that run (the new
// one included), starts none, reports the interrupted deploy, and the next
// deploy stops what the interrupted one left behind.
func TestFaultBatonKilledMidDeploy(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--drain-timeout", "10s")
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID // on green

	// Killed while the new instance starts (before the swap).
	slowStart := writeScript(t, "slow.sh", fmt.Sprintf("exec %s \"$@\" --startup-delay 3s\n", appBin))
	result := bgDeploy(b, "--artifact", slowStart, "--version", "v2")
	var v2 int
	deadline := time.Now().Add(10 * time.Second)
	for v2 == 0 {
		if st := readState(t, b.state); st.Pending != nil && st.Pending.Instance != nil {
			v2 = st.Pending.Instance.PID
			killGroup(t, v2)
		}
		if time.Now().After(deadline) {
			t.Fatal("the state never recorded the launched instance")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.sigkill()
	if r := <-result; !strings.HasPrefix(r, "exit 1") || !strings.Contains(r, "closed the stream before the operation finished") {
		t.Errorf("the interrupted deploy's CLI:\n%s\nwant exit 1 saying the stream closed early", r)
	}
	readState(t, b.state) // whole and valid
	// As if baton had also died between writing a temp file and renaming it.
	leftover := filepath.Join(b.state, ".state.json.tmp-1234")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"live":"bl`), 0o600); err != nil {
		t.Fatal(err)
	}

	b.start()
	st := mustStatus(t, b)
	h := lastHistory(t, st)
	if st.Live != "green" || !h.Interrupted || h.Version != "v2" || !strings.Contains(h.Error, "before the swap") {
		t.Errorf("after restart: live %s, last %+v; want green and the v2 deploy interrupted before the swap", st.Live, h)
	}
	if g, bl := upstream(st, "green").Instance, upstream(st, "blue").Instance; g == nil || g.PID != v1 || bl == nil || bl.PID != v2 {
		t.Errorf("instances green %+v blue %+v; want v1 (pid %d) and the adopted v2 (pid %d)", g, bl, v1, v2)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("the leftover temp file is still there (%v)", err)
	}
	wantInstances(t, b, map[int]string{v1: "v1", v2: "v2"}) // nothing started at restart
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("after restart served by %q; want v1", v)
	}
	if out, _ := b.cli("status"); !strings.Contains(out, "INTERRUPTED") {
		t.Errorf("status output does not show the interrupted deploy:\n%s", out)
	}

	// The next deploy stops the leftover v2 first, then replaces v1.
	lines, last, out, code := b.deploy("--artifact", appBin, "--version", "v3")
	if code != 0 || !strings.Contains(out, "stopped the previous blue instance") {
		t.Fatalf("deploy v3 exited %d (steps %q):\n%s", code, steps(lines), out)
	}
	v3 := last.Deploy.PID
	wantInstances(t, b, map[int]string{v3: "v3"})

	// Killed during the drain (after the swap): a slow request keeps it
	// going.
	go func() {
		if resp, err := http.Get("http://" + b.http + "/slow?ms=5000"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	result = bgDeploy(b, "--artifact", appBin, "--version", "v4")
	waitStep(t, b, "drain")
	v4 := readState(t, b.state).Instances["green"].PID
	killGroup(t, v4)
	b.sigkill()
	<-result

	b.start()
	st = mustStatus(t, b)
	h = lastHistory(t, st)
	if st.Live != "green" || !h.Interrupted || h.Version != "v4" || !strings.Contains(h.Error, "after the swap") {
		t.Errorf("after restart: live %s, last %+v; want green and the v4 deploy interrupted after the swap", st.Live, h)
	}
	if bl := upstream(st, "blue").Instance; bl == nil || bl.PID != v3 {
		t.Errorf("blue instance %+v; want v3 (pid %d) adopted", bl, v3)
	}
	wantInstances(t, b, map[int]string{v3: "v3", v4: "v4"})
	if _, _, v := get(t, b.http, "/"); v != "v4" {
		t.Fatalf("after restart served by %q; want v4", v)
	}
	_, last, out, code = b.deploy("--artifact", appBin, "--version", "v5")
	if code != 0 || !strings.Contains(out, "stopped the previous blue instance") {
		t.Fatalf("deploy v5 exited %d:\n%s", code, out)
	}
	wantInstances(t, b, map[int]string{last.Deploy.PID: "v5"})
	if st := readState(t, b.state); st.Pending != nil || st.Live != "blue" {
		t.Errorf("state on disk %+v; want live blue and nothing pending", st)
	}
}

// TestFaultDiskFull fills the file system of the state directory (a 64 KiB
// tmpfs; root only): a switch is refused before anything changes, with the
// reason in its output and in status, and works again once there is room.
func TestFaultDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root; switcher's TestFullDisk* cover this with a failing store")
	}
	b := newBaton(t, "--no-stop")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", b.state).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	// Registered before baton starts, so it runs after baton is killed.
	t.Cleanup(func() { _ = exec.Command("umount", "-l", b.state).Run() })
	blue := startApp(t, b.blue, "v1")
	green := startApp(t, b.green, "v2")
	waitListening(t, blue, 10*time.Second)
	waitListening(t, green, 10*time.Second)
	b.start()

	filler := filepath.Join(b.state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()

	out, code := b.cli("switch")
	if code != 1 || !strings.Contains(out, "cannot save state") || !strings.Contains(out, "no space left on device") || !strings.Contains(out, "nothing was changed") {
		t.Errorf("switch on a full disk: exit %d:\n%s\nwant 1 with the reason", code, out)
	}
	st := mustStatus(t, b)
	if st.Live != "blue" || !strings.Contains(st.StateError, "no space left on device") {
		t.Errorf("status live %s state_error %q; want blue and the save error", st.Live, st.StateError)
	}
	if out, _ := b.cli("status"); !strings.Contains(out, "STATE NOT SAVED") {
		t.Errorf("status output does not show the save error:\n%s", out)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("served by %q; want v1", v)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if out, code := b.cli("switch"); code != 0 {
		t.Fatalf("switch with room again exited %d:\n%s", code, out)
	}
	if st := mustStatus(t, b); st.Live != "green" || st.StateError != "" {
		t.Errorf("status live %s state_error %q; want green and no error", st.Live, st.StateError)
	}
	if st := readState(t, b.state); st.Live != "green" {
		t.Errorf("state on disk says live %s; want green", st.Live)
	}
}

// TestFaultOperationsRefused: a rollback with nothing to roll back to, and
// a second deploy, a switch or a rollback during a deploy, are each refused
// with 409 and the reason; rollbacks that can be done are.
func TestFaultOperationsRefused(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	if out, code := b.cli("rollback", "--help"); code != 0 || !strings.Contains(out, "Usage: baton rollback") {
		t.Errorf("rollback --help: exit %d:\n%s", code, out)
	}
	if out, code := b.cli("rollback", "v1"); code != 2 || !strings.Contains(out, "unexpected argument") {
		t.Errorf("rollback v1: exit %d:\n%s; want 2", code, out)
	}
	out, code := b.cli("rollback")
	if code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, "nothing to roll back to: no earlier version is recorded") {
		t.Errorf("rollback on a fresh baton: exit %d:\n%s", code, out)
	}
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	out, code = b.cli("rollback")
	if code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, "does not answer its health check") || !strings.Contains(out, "baton did not launch it") {
		t.Errorf("rollback to a colour where nothing ever ran: exit %d:\n%s", code, out)
	}

	slowStart := writeScript(t, "slow.sh", fmt.Sprintf("exec %s \"$@\" --startup-delay 1500ms\n", appBin))
	result := bgDeploy(b, "--artifact", slowStart, "--version", "v2")
	waitStep(t, b, "health")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", "--artifact", appBin, "--version", "v3"}, "another operation is running: deploy to blue"},
		{[]string{"switch"}, "another operation is running: deploy to blue"},
		{[]string{"rollback"}, "another operation is running: deploy to blue"},
	} {
		if out, code := b.cli(tc.args...); code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, tc.want) {
			t.Errorf("baton %v during a deploy: exit %d:\n%s\nwant 1 with 409 %q", tc.args, code, out, tc.want)
		}
	}
	if r := <-result; !strings.HasPrefix(r, "exit 0") {
		t.Fatalf("the first deploy:\n%s", r)
	}
	st := mustStatus(t, b)
	v2 := upstream(st, "blue").Instance.PID
	killGroup(t, v2)
	if n := len(st.History); n != 2 {
		t.Errorf("history has %d entries; want the 2 deploys only (refusals are not operations)", n)
	}

	// v1 was stopped by the deploy of v2: a rollback starts it again.
	lines, last, out, code := b.cliLines("rollback", "--json")
	if code != 0 || last.Deploy == nil || last.Deploy.Version != "v1" || !strings.Contains(steps(lines), "start plan launch health") {
		t.Fatalf("rollback to a stopped v1: exit %d (steps %q):\n%s", code, steps(lines), out)
	}
	killGroup(t, last.Deploy.PID)
	if _, _, v := get(t, b.http, "/"); v != "v1" || !gone(v1) || !gone(v2) {
		t.Errorf("after the rollback served by %q; want v1 on a new instance, the old v1 and v2 gone", v)
	}
	wantInstances(t, b, map[int]string{last.Deploy.PID: "v1"})
}

// TestFaultRollbackToKeptInstance: with --no-stop the previous instance
// still runs, and a rollback switches back to it without starting anything.
func TestFaultRollbackToKeptInstance(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--no-stop")
	b.start()
	_, last, _, _ := b.deploy("--artifact", appBin, "--version", "v1")
	v1 := last.Deploy.PID
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v2")
	if code != 0 {
		t.Fatalf("deploy v2 exited %d:\n%s", code, out)
	}
	v2 := last.Deploy.PID
	stopLoad := startLoad(t, faultLoad(b.http))
	lines, _, out, code := b.cliLines("rollback", "--json")
	if code != 0 || !strings.Contains(out, "still runs on green: switching back to it") || strings.Contains(steps(lines), "launch") {
		t.Fatalf("rollback to a kept v1: exit %d (steps %q):\n%s", code, steps(lines), out)
	}
	time.Sleep(200 * time.Millisecond)
	noFailures(t, b, "a rollback by switch", stopLoad())
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("served by %q; want v1", v)
	}
	wantInstances(t, b, map[int]string{v1: "v1", v2: "v2"})
}

// faultApp is an upstream that misbehaves on purpose, written on raw TCP so
// that each fault is exactly what it says. Paths:
//
//	/reset-mid     headers and 10 of 1000 body bytes, then a TCP reset
//	/reset-before  a TCP reset instead of an answer
//	/hang          reads the request and never answers
//	/echo          (POST) "fault <bytes read>"
//	anything else  "fault"
//
// mode decides what happens to a keep-alive connection after a good answer.
type faultApp struct {
	ln   net.Listener
	mode atomic.Int32
	hang chan struct{}
}

const (
	keepConns     = iota // keep-alive, as a normal server
	closeSilently        // close right after each answer without saying so
	closeEvery3rd        // "Connection: close" on every third answer
)

func startFaultApp(t *testing.T, addr string) *faultApp {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &faultApp{ln: ln, hang: make(chan struct{})}
	t.Cleanup(func() {
		close(a.hang)
		ln.Close()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(c)
		}
	}()
	return a
}

func (a *faultApp) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for n := 1; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, _ := io.ReadAll(req.Body)
		switch req.URL.Path {
		case "/reset-mid":
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-App-Version: fault\r\n\r\n%s", strings.Repeat("x", 10))
			reset(c)
			return
		case "/reset-before":
			reset(c)
			return
		case "/hang":
			<-a.hang
			return
		}
		answer := "fault"
		if req.Method == http.MethodPost {
			answer = "fault " + strconv.Itoa(len(body))
		}
		mode := a.mode.Load()
		closeNow, hdr := mode == closeSilently, ""
		if mode == closeEvery3rd && n%3 == 0 {
			closeNow, hdr = true, "Connection: close\r\n"
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-App-Version: fault\r\n%s\r\n%s", len(answer), hdr, answer)
		if closeNow {
			return
		}
	}
}

func reset(c net.Conn) {
	_ = c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// TestFaultUpstreamTrouble: the live app refuses connections, resets in the
// middle of an answer or before it, hangs, or closes its keep-alive
// connections all the time.
func TestFaultUpstreamTrouble(t *testing.T) {
	b := newBaton(t, "--upstream-timeout", "500ms", "--retry-timeout", "300ms")
	b.start() // nothing listens on blue yet

	// Connection refused: a clear 502 once the retries give up, and
	// success as soon as the app listens, without touching baton.
	start := time.Now()
	c, body, _ := get(t, b.http, "/")
	if c != http.StatusBadGateway || !strings.Contains(body, "the app is not answering") {
		t.Errorf("nothing listening: %d %q; want 502", c, body)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 3*time.Second {
		t.Errorf("the 502 came after %s; want it after some retries, within the 300ms retry timeout", took)
	}
	app := startFaultApp(t, b.blue)
	if c, body, _ := get(t, b.http, "/"); c != 200 || body != "fault" {
		t.Fatalf("once the app listens: %d %q; want 200", c, body)
	}

	// A reset in the middle of the body: the client sees a broken
	// response, not a hang and not a complete-looking one.
	resp, err := http.Get("http://" + b.http + "/reset-mid")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a response cut by a reset reached the client as complete")
	}
	if c, _, _ := get(t, b.http, "/reset-before"); c != http.StatusBadGateway {
		t.Errorf("reset before any answer: %d; want 502", c)
	}

	// A hung app: 504 at the upstream timeout, reported in the log.
	start = time.Now()
	c, body, _ = get(t, b.http, "/hang")
	if c != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
		t.Errorf("hung app: %d %q; want 504", c, body)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 3*time.Second {
		t.Errorf("the 504 came after %s; want after the 500ms upstream timeout", took)
	}
	// The log reaches the test through a pipe, a moment after the answer.
	logged := func() bool {
		log := b.proc.out.String()
		return strings.Contains(log, "kind=timeout") && strings.Contains(log, "upstream timeout of 500ms")
	}
	for deadline := time.Now().Add(2 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("the timeout is not in baton's log:\n%s", b.proc.out.String())
	}

	// An app that closes its keep-alive connections: with "Connection:
	// close" (as Tomcat's maxKeepAliveRequests does) nothing fails, GETs
	// or POSTs; closed silently after every answer, the idempotent
	// requests are retried on a fresh connection and nothing fails either,
	// while a POST caught in the race can fail with a 502 (see
	// docs/guarantees.md).
	cfg := faultLoad(b.http)
	cfg.Rate, cfg.PostFraction, cfg.SkipEchoCheck = 300, 0.3, true
	app.mode.Store(closeEvery3rd)
	stop := startLoad(t, cfg)
	time.Sleep(1500 * time.Millisecond)
	noFailures(t, b, "an app closing every third connection", stop())
	app.mode.Store(closeSilently)
	stop = startLoad(t, cfg)
	time.Sleep(1500 * time.Millisecond)
	rep := stop()
	t.Logf("load against an app closing silently:\n%s", rep.Summary())
	for _, r := range rep.Failures() {
		if r.Kind != loadgen.KindPost || r.Status != http.StatusBadGateway {
			t.Errorf("failed: %+v; only a POST may fail on a silently closed connection, and with a 502", r)
		}
	}
	if n := len(rep.Failures()); n > rep.Total()/100 {
		t.Errorf("%d of %d requests failed; want at most 1%%", n, rep.Total())
	}

	if st := mustStatus(t, b); upstream(st, "blue").InFlight != 0 {
		t.Errorf("blue in flight %d after the faults; want 0 (a leak would block every drain)", upstream(st, "blue").InFlight)
	}
}

// TestFaultAdminAPI: a missing or wrong token gets 401 on every endpoint
// and changes nothing; malformed JSON, unknown fields and oversized bodies
// are refused before anything runs.
func TestFaultAdminAPI(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID
	before := mustStatus(t, b)
	post := func(path, token, ct, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+b.admin+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	endpoints := map[string]string{
		"/v1/switch":   `{"to":"blue"}`,
		"/v1/deploy":   `{"version":"v2","artifact":"` + appBin + `"}`,
		"/v1/rollback": `{}`,
		"/v1/upgrade":  `{}`,
	}
	for path, body := range endpoints {
		for _, tok := range []string{"", "wrong-token", strings.ToUpper(b.token)} {
			if c, resp := post(path, tok, "application/json", body); c != http.StatusUnauthorized || !strings.Contains(resp, "missing or wrong bearer token") {
				t.Errorf("POST %s with token %q: %d %s; want 401", path, tok, c, resp)
			}
		}
		for _, tc := range []struct {
			name, body string
			code       int
		}{
			{"malformed JSON", `{"version":`, 400},
			{"unknown field", `{"colour":"blue"}`, 400},
			{"oversized", `{"version":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`, 413},
		} {
			if c, resp := post(path, b.token, "application/json", tc.body); c != tc.code || !strings.Contains(resp, `"error"`) {
				t.Errorf("POST %s, %s: %d %s; want %d with a JSON error", path, tc.name, c, resp, tc.code)
			}
		}
	}
	req, _ := http.NewRequest("GET", "http://"+b.admin+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/status with a wrong token: %v, %v; want 401", resp.Status, err)
	}

	after := mustStatus(t, b)
	if after.Live != before.Live || len(after.History) != len(before.History) || after.PID != before.PID || gone(v1) {
		t.Errorf("refused requests changed something: before %+v\nafter %+v", before, after)
	}
	wantInstances(t, b, map[int]string{v1: "v1"})
}

// TestFaultGracefulStopLeavesInstances: SIGTERM to baton stops accepting,
// finishes the request in flight, and leaves the instances it launched
// running; the next baton adopts them and stops them by PID when it
// replaces them.
func TestFaultGracefulStopLeavesInstances(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID

	done := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + b.http + "/slow?ms=800")
		if err != nil {
			done <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}()
	time.Sleep(200 * time.Millisecond)
	if err := b.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if conn, err := net.DialTimeout("tcp", b.http, time.Second); err == nil {
		conn.Close()
		t.Error("baton still accepts connections after SIGTERM")
	}
	if r := <-done; r != "200 v1" {
		t.Errorf("the request in flight at SIGTERM got %q; want 200 v1", r)
	}
	b.proc.waitExit(t, 10*time.Second)
	if gone(v1) {
		t.Fatal("stopping baton stopped the app it launched")
	}

	b.start()
	st := mustStatus(t, b)
	if inst := upstream(st, "green").Instance; st.Live != "green" || inst == nil || inst.PID != v1 {
		t.Fatalf("after restart live %s, green instance %+v; want green with v1 (pid %d) adopted", st.Live, inst, v1)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("after restart served by %q; want v1", v)
	}
	_, last, out, code = b.deploy("--artifact", appBin, "--version", "v2")
	if code != 0 || !strings.Contains(last.Deploy.Stopped, fmt.Sprintf("pid %d exited", v1)) {
		t.Fatalf("deploy v2 exited %d, stopped %q:\n%s", code, last.Deploy.Stopped, out)
	}
	wantInstances(t, b, map[int]string{last.Deploy.PID: "v2"})
}
