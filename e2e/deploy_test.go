package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/internal/sshtest"
	"github.com/batonproxy/baton/launcher"
)

// appRun is the --run template that starts the sample app as the artifact.
const appRun = "{artifact} --port {port} --version {version}"

// deploy runs 'baton deploy --json' and returns every progress line, the
// last one (with the deploy's result) and the exit code. It registers a
// cleanup that kills the new instance's process group, whatever happens.
func (b *baton) deploy(args ...string) (lines []admin.StreamLine, last admin.StreamLine, out string, code int) {
	b.t.Helper()
	out, code = b.cli(append([]string{"deploy", "--json"}, args...)...)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var sl admin.StreamLine
		if json.Unmarshal([]byte(l), &sl) != nil {
			continue // the CLI's own "baton: ..." line
		}
		lines = append(lines, sl)
		if sl.Deploy != nil {
			last = sl
			if pid := sl.Deploy.PID; pid > 0 {
				b.t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
			}
		}
	}
	return lines, last, out, code
}

func steps(lines []admin.StreamLine) string {
	var s []string
	for _, l := range lines {
		s = append(s, l.Step)
	}
	return strings.Join(s, " ")
}

// gone reports whether pid has exited (a zombie counts as gone).
func gone(pid int) bool { return !launcher.Alive(pid) }

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeployUnderLoadLosesNothing is issue 3's promise: 'baton deploy'
// uploads the artifact, starts it on the idle colour, switches and stops
// the old instance, again and again under load, and no request fails.
func TestDeployUnderLoadLosesNothing(t *testing.T) {
	deploys := 6
	if testing.Short() {
		deploys = 3
	}
	// --keep-releases 3: the later deploys remove the oldest release and
	// its log, under load (issue 13, item 9).
	const keep = 3
	b := newBaton(t, "--run", appRun+" --startup-delay 300ms", "--drain-timeout", "10s", "--keep-releases", strconv.Itoa(keep))
	b.start() // nothing runs yet: the first deploy brings the app up

	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("first deploy exited %d:\n%s\nbaton log:\n%s", code, out, b.proc.out.String())
	}
	pids := []int{last.Deploy.PID}

	ctx, stopLoad := context.WithCancel(context.Background())
	reportc := make(chan *loadgen.Report, 1)
	go func() {
		reportc <- loadgen.Run(ctx, loadgen.Config{
			Target: b.http, Rate: 200, KeepAliveConns: 8,
			NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 300 * time.Millisecond, SlowMax: 1500 * time.Millisecond,
			PostFraction: 0.1,
		})
	}()
	time.Sleep(300 * time.Millisecond)
	for i := 2; i <= deploys; i++ {
		v := "v" + strconv.Itoa(i)
		lines, last, out, code := b.deploy("--artifact", appBin, "--version", v)
		if code != 0 || last.OK == nil || !*last.OK {
			stopLoad()
			<-reportc
			t.Fatalf("deploy %s exited %d:\n%s\nbaton log:\n%s", v, code, out, b.proc.out.String())
		}
		want := "artifact start install launch health"
		end := "drain stop done"
		if i > keep {
			end = "drain stop prune done"
		}
		if got := steps(lines); !strings.HasPrefix(got, want) || !strings.Contains(got, "swap persist drain") || !strings.HasSuffix(got, end) {
			t.Errorf("deploy %s steps %q; want %q ... swap persist drain ... %s", v, got, want, end)
		}
		d := last.Deploy
		if d.Version != v || d.PID <= 0 || len(d.SHA256) != 64 || !strings.Contains(d.Stopped, "exited") {
			t.Errorf("deploy %s result %+v", v, d)
		}
		if prev := pids[len(pids)-1]; !gone(prev) {
			t.Errorf("after deploy %s the old instance (pid %d) still runs", v, prev)
		}
		pids = append(pids, d.PID)
		if _, _, got := get(t, b.http, "/"); got != v {
			t.Errorf("after deploy %s served by %s", v, got)
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	rep := <-reportc
	t.Logf("load summary:\n%s", rep.Summary())
	if rep.Total() < deploys*50 {
		t.Fatalf("only %d requests were sent; the load did not run", rep.Total())
	}
	failOnFailures(t, rep, "", b.proc.out.String())

	// Only the last instance runs, and baton records it.
	for _, pid := range pids[:len(pids)-1] {
		if !gone(pid) {
			t.Errorf("old instance pid %d still runs", pid)
		}
	}
	st, err := b.status()
	if err != nil {
		t.Fatal(err)
	}
	lastV := "v" + strconv.Itoa(deploys)
	for _, u := range st.Upstreams {
		switch {
		case u.Live && (u.Instance == nil || u.Instance.PID != pids[len(pids)-1] || u.Instance.AppVersion != lastV):
			t.Errorf("live upstream %s records %+v; want pid %d version %s", u.Color, u.Instance, pids[len(pids)-1], lastV)
		case !u.Live && u.Instance != nil:
			t.Errorf("idle upstream %s still records instance %+v after its stop", u.Color, u.Instance)
		}
	}
	if n := len(st.History); n != deploys || st.History[n-1].Kind != "deploy" || st.History[n-1].Version != lastV {
		t.Errorf("history %+v; want %d deploys ending with %s", st.History, deploys, lastV)
	}
	// The newest releases are kept, with one log per deploy of theirs.
	kept := min(deploys, keep)
	logs, _ := filepath.Glob(filepath.Join(b.state, "logs", "*.log"))
	if len(logs) != kept {
		t.Errorf("%d log files %q; want one per kept deploy (%d)", len(logs), logs, kept)
	}
	var releases []string
	entries, _ := os.ReadDir(filepath.Join(b.state, "releases"))
	for _, e := range entries {
		releases = append(releases, e.Name())
	}
	var wantReleases []string
	for i := deploys - kept + 1; i <= deploys; i++ {
		wantReleases = append(wantReleases, "v"+strconv.Itoa(i))
	}
	if strings.Join(releases, " ") != strings.Join(wantReleases, " ") {
		t.Errorf("releases %q; want the newest %q", releases, wantReleases)
	}
	if uploads, _ := os.ReadDir(filepath.Join(b.state, "uploads")); len(uploads) != 0 {
		t.Errorf("%d uploads left behind", len(uploads))
	}
}

// TestDeployFailuresKeepOldServing: a crashing artifact fails the deploy at
// once, one that never gets healthy fails at the health deadline; either
// way the old version keeps serving, baton exits 1 with the reason and the
// new instance's log tail, and the new process is gone.
func TestDeployFailuresKeepOldServing(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--health-deadline", "3s")
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	v1 := last.Deploy.PID

	crash := writeScript(t, "crash.sh", `echo "crash.sh starting on port $PORT"
echo "FATAL: cannot open database" >&2
exit 3
`)
	start := time.Now()
	_, last, out, code = b.deploy("--artifact", crash, "--version", "v2-crash")
	took := time.Since(start)
	if code != 1 {
		t.Fatalf("deploy of a crashing artifact exited %d; want 1\n%s", code, out)
	}
	for _, want := range []string{"exited during start-up", "exit status 3", "green keeps serving", "FATAL: cannot open database", "crash.sh starting on port"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(last.Deploy.LogTail, "FATAL: cannot open database") {
		t.Errorf("result's log tail %q lacks the app's error", last.Deploy.LogTail)
	}
	if took > 2*time.Second {
		t.Errorf("a crash during start-up took %s to fail the deploy; want it at once, not at the 3s health deadline", took)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" || gone(v1) {
		t.Fatalf("after a failed deploy served by %q (v1 pid %d gone: %v); want v1", v, v1, gone(v1))
	}

	failFile := filepath.Join(t.TempDir(), "fail")
	if err := os.WriteFile(failFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sick := writeScript(t, "sick.sh", fmt.Sprintf("exec %s \"$@\" --fail-health-file %s\n", appBin, failFile))
	_, last, out, code = b.deploy("--artifact", sick, "--version", "v2-sick")
	if code != 1 {
		t.Fatalf("deploy of an app that never gets healthy exited %d; want 1\n%s", code, out)
	}
	for _, want := range []string{"health check failed", "status 500", "green keeps serving", "sampleapp v2-sick listening on"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if pid := last.Deploy.PID; pid <= 0 || !gone(pid) {
		t.Errorf("the unhealthy instance (pid %d) is still running", pid)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" || gone(v1) {
		t.Fatalf("after a failed deploy served by %q; want v1", v)
	}

	// The CLI's human output says the same and exits 1.
	hout, hcode := b.cli("deploy", "--artifact", crash, "--version", "v2-crash-again")
	if hcode != 1 || !strings.Contains(hout, "baton: deploy v2-crash-again to blue:") || !strings.Contains(hout, "FATAL: cannot open database") {
		t.Errorf("human output, exit %d:\n%s", hcode, hout)
	}
	st, err := b.status()
	if err != nil || st.Live != "green" || len(st.History) != 4 || st.History[1].OK || st.History[2].OK {
		t.Fatalf("status %+v, %v; want green live and the failed deploys in the history", st, err)
	}
}

// TestDeployRefusedWhileAnotherRuns: one operation at a time; a second
// deploy (or switch) during a deploy gets 409.
func TestDeployRefusedWhileAnotherRuns(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	if _, _, out, code := b.deploy("--artifact", appBin, "--version", "v1"); code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	slow := writeScript(t, "slow.sh", fmt.Sprintf("exec %s \"$@\" --startup-delay 2s\n", appBin))
	type result struct {
		out  string
		code int
	}
	first := make(chan result, 1)
	go func() {
		_, _, out, code := b.deploy("--artifact", slow, "--version", "v2")
		first <- result{out, code}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := b.status()
		if err == nil && st.Operation != nil && st.Operation.Kind == "deploy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first deploy never showed in status")
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, code := b.cli("deploy", "--artifact", appBin, "--version", "v3")
	if code != 1 || !strings.Contains(out, "409") || !strings.Contains(out, "another operation is running: deploy to blue") {
		t.Errorf("second deploy: exit %d:\n%s\nwant 1 with a 409 naming the running deploy", code, out)
	}
	if out, code := b.cli("switch"); code != 1 || !strings.Contains(out, "409") {
		t.Errorf("switch during a deploy: exit %d:\n%s", code, out)
	}
	req, _ := http.NewRequest("POST", "http://"+b.admin+"/v1/deploy", strings.NewReader(`{"version":"v4","artifact":"`+appBin+`"}`))
	req.Header.Set("Authorization", "Bearer "+b.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("POST /v1/deploy during a deploy: %s; want 409", resp.Status)
	}

	r := <-first
	if r.code != 0 {
		t.Fatalf("the first deploy exited %d:\n%s", r.code, r.out)
	}
	if _, _, v := get(t, b.http, "/"); v != "v2" {
		t.Fatalf("served by %s; want v2", v)
	}
}

// TestDeployAPIChecksTheArtifact: the admin API refuses a corrupt or
// oversized upload and a bad version before anything starts.
func TestDeployAPIChecksTheArtifact(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--max-artifact-size", "1MiB")
	b.start()
	post := func(query, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+b.admin+"/v1/deploy?"+query, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+b.token)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post("version=v1&name=app&sha256="+strings.Repeat("0", 64), "not the app"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("upload with a wrong sha256: %s; want 400", resp.Status)
	}
	if resp := post("version=v1&name=app", strings.Repeat("x", 2<<20)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("upload over --max-artifact-size: %s; want 413", resp.Status)
	}
	if resp := post("version=../../x&name=app", "x"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("upload with a bad version: %s; want 400", resp.Status)
	}
	if out, code := b.cli("deploy", "--artifact", appBin, "--version", "1;rm"); code != 2 || !strings.Contains(out, "--version") {
		t.Errorf("deploy --version '1;rm': exit %d:\n%s; want 2", code, out)
	}
	if out, code := b.cli("deploy", "--artifact", appBin, "--version", "v1"); code != 1 || !strings.Contains(out, "413") {
		t.Errorf("deploy of a 9 MB app over a 1MiB limit: exit %d:\n%s; want 1 with 413", code, out)
	}
	st, _ := b.status()
	if len(st.History) != 0 {
		t.Errorf("refused uploads left history %+v", st.History)
	}
	if uploads, _ := os.ReadDir(filepath.Join(b.state, "uploads")); len(uploads) != 0 {
		t.Errorf("%d refused uploads left on disk", len(uploads))
	}
}

// TestDeployOverSSH runs the whole deploy against a real sshd on
// 127.0.0.1: baton uploads the artifact over SFTP, starts it detached on
// the "remote" host, health-checks it there, switches, and stops the old
// instance by PID over SSH.
func TestDeployOverSSH(t *testing.T) {
	srv := sshtest.Start(t)
	remote := filepath.Join(t.TempDir(), "remote")
	b := newBaton(t, "--run", appRun, "--ssh", srv.Target, "--ssh-key", srv.UserKeyFile,
		"--known-hosts", srv.KnownHosts, "--ssh-dir", remote)
	b.start()
	var pids []int
	for _, v := range []string{"v1", "v2"} {
		lines, last, out, code := b.deploy("--artifact", appBin, "--version", v)
		if code != 0 {
			t.Fatalf("deploy %s over SSH exited %d:\n%s\nbaton log:\n%s", v, code, out, b.proc.out.String())
		}
		if !strings.Contains(steps(lines), "install launch health") || last.Deploy.Host != srv.Target {
			t.Errorf("deploy %s: steps %q, host %q", v, steps(lines), last.Deploy.Host)
		}
		if want := filepath.Join(remote, "releases", v, "app"); last.Deploy.Artifact != want {
			t.Errorf("deploy %s ran %q; want %q", v, last.Deploy.Artifact, want)
		}
		pids = append(pids, last.Deploy.PID)
	}
	if _, _, v := get(t, b.http, "/"); v != "v2" {
		t.Fatalf("served by %s; want v2", v)
	}
	if !gone(pids[0]) {
		t.Errorf("v1 (pid %d) still runs after the deploy of v2", pids[0])
	}
}

// TestRollbackOverSSH: 'baton rollback' starts the previous release again
// on the remote host over SSH and switches back to it. With that release
// gone from the host, the rollback fails like a failed start, and the
// version that was serving keeps serving.
func TestRollbackOverSSH(t *testing.T) {
	srv := sshtest.Start(t)
	remote := filepath.Join(t.TempDir(), "remote")
	b := newBaton(t, "--run", appRun, "--ssh", srv.Target, "--ssh-key", srv.UserKeyFile,
		"--known-hosts", srv.KnownHosts, "--ssh-dir", remote)
	b.start()
	pids := map[string]int{}
	for _, v := range []string{"v1", "v2"} {
		_, last, out, code := b.deploy("--artifact", appBin, "--version", v)
		if code != 0 || last.Deploy == nil {
			t.Fatalf("deploy %s over SSH exited %d:\n%s", v, code, out)
		}
		pids[v] = last.Deploy.PID
		killGroup(t, last.Deploy.PID)
	}

	_, last, out, code := b.cliLines("rollback", "--json")
	if code != 0 || last.Deploy == nil || last.Deploy.Version != "v1" || last.Deploy.Host != srv.Target {
		t.Fatalf("rollback over SSH exited %d:\n%s\nbaton log:\n%s", code, out, b.proc.out.String())
	}
	killGroup(t, last.Deploy.PID)
	if last.Deploy.PID == pids["v1"] {
		t.Errorf("rollback reports v1's old pid %d; want the instance it started", pids["v1"])
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("after the rollback served by %q; want v1", v)
	}
	if !gone(pids["v2"]) {
		t.Errorf("v2 (pid %d) still runs after the rollback to v1", pids["v2"])
	}

	// Rolling back again would start v2; take its release off the host.
	if err := os.RemoveAll(filepath.Join(remote, "releases", "v2")); err != nil {
		t.Fatal(err)
	}
	_, _, out, code = b.cliLines("rollback", "--json")
	if code == 0 {
		t.Fatalf("rollback to a release missing on the remote host succeeded:\n%s", out)
	}
	if !strings.Contains(out, "releases/v2") || !strings.Contains(out, "keeps serving") {
		t.Errorf("the failed rollback does not say which release failed and that the live colour keeps serving:\n%s", out)
	}
	for range 5 {
		if c, _, v := get(t, b.http, "/"); c != 200 || v != "v1" {
			t.Fatalf("after the failed rollback: %d from %q; want 200 from v1", c, v)
		}
	}
	if h := lastHistory(t, mustStatus(t, b)); h.Kind != "rollback" || h.OK {
		t.Errorf("last history entry %+v; want a failed rollback", h)
	}
}
