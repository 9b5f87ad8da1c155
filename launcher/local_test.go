package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// appBin is the real sample app (examples/app), built once for the tests.
var appBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "baton-launcher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	appBin = filepath.Join(dir, "app")
	if out, err := exec.Command("go", "build", "-o", appBin, "../examples/app").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the sample app: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

var specSeq int

func testSpec(t *testing.T, artifact, version string) Spec {
	t.Helper()
	specSeq++
	return Spec{ID: "test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(specSeq), Color: "green",
		Port: freePort(t), Artifact: artifact, Version: version}
}

// start starts spec and makes sure the instance's process group is killed
// when the test ends, whatever happened.
func start(t *testing.T, l Launcher, spec Spec) Instance {
	t.Helper()
	inst, err := l.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := inst.Record().PID
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
	return inst
}

// waitHealthy polls the app's /health until it answers 200.
func waitHealthy(t *testing.T, inst Instance, port int) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			tail, _ := inst.LogTail(context.Background(), 20)
			t.Fatalf("%s not healthy on port %d after 10s (last error %v); log:\n%s", inst, port, err, tail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExec waits until pid runs the program named comm (past a shell's exec).
func waitExec(t *testing.T, pid int, comm string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		if strings.TrimSpace(string(b)) == comm {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d runs %q; want %q", pid, strings.TrimSpace(string(b)), comm)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLocalStartsAndStopsTheApp(t *testing.T) {
	dir := t.TempDir()
	l := &Local{Command: "{artifact} --port {port} --version {version}", Dir: dir}
	spec := testSpec(t, appBin, "v1.2.3")
	var progress []string
	spec.Progress = func(msg string) { progress = append(progress, msg) }
	inst := start(t, l, spec)
	rec := inst.Record()
	waitHealthy(t, inst, spec.Port)

	if want := filepath.Join(dir, "releases", "v1.2.3", "app"); rec.Artifact != want {
		t.Errorf("artifact at %q; want %q", rec.Artifact, want)
	}
	if fi, err := os.Stat(rec.Artifact); err != nil || fi.Mode()&0o100 == 0 {
		t.Errorf("installed artifact: %v, mode %v; want an executable file", err, fi.Mode())
	}
	if len(progress) != 1 || !strings.Contains(progress[0], "installed") {
		t.Errorf("progress %q; want one 'installed' note", progress)
	}
	if rec.Launcher != "local" || rec.Host != "" || rec.AppVersion != "v1.2.3" || rec.ID != spec.ID || rec.Started.IsZero() {
		t.Errorf("record %+v", rec)
	}
	if !strings.HasPrefix(rec.Log, filepath.Join(dir, "logs")+"/") || !strings.Contains(rec.Log, "green-v1.2.3-") {
		t.Errorf("log at %q; want dir/logs/green-v1.2.3-ID.log", rec.Log)
	}
	// The template is one simple command, so the shell exec'd the app: the
	// recorded PID is the app's, and it leads its own process group.
	waitExec(t, rec.PID, "app")
	if pgid, _ := syscall.Getpgid(rec.PID); pgid != rec.PID {
		t.Errorf("pgid %d; want the app in its own group %d", pgid, rec.PID)
	}
	tail, err := inst.LogTail(context.Background(), 5)
	if err != nil || !strings.Contains(tail, "listening on 127.0.0.1:"+strconv.Itoa(spec.Port)) {
		t.Errorf("log tail %q, %v; want the app's 'listening' line", tail, err)
	}
	if alive, err := inst.Alive(context.Background()); !alive || err != nil {
		t.Fatalf("Alive = %v, %v; want true", alive, err)
	}

	desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 5*time.Second)
	if err != nil || !strings.Contains(desc, "exited") || !strings.Contains(desc, "SIGTERM") {
		t.Fatalf("Stop = %q, %v; want it to exit after SIGTERM", desc, err)
	}
	if alive, _ := inst.Alive(context.Background()); alive || Alive(rec.PID) {
		t.Fatal("instance alive after Stop")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := inst.Wait(ctx); err != nil {
		t.Errorf("Wait after a clean exit = %v; want nil", err)
	}
	if desc, err := inst.Stop(context.Background(), syscall.SIGTERM, time.Second); err != nil || !strings.Contains(desc, "already exited") {
		t.Errorf("second Stop = %q, %v", desc, err)
	}
}

// A rollback starts a release that an earlier Start installed, from where
// it lies, without installing it again.
func TestLocalStartsAnInstalledArtifact(t *testing.T) {
	dir := t.TempDir()
	l := &Local{Command: "{artifact} --port {port} --version {version}", Dir: dir}
	first := start(t, l, testSpec(t, appBin, "v1"))
	installed := first.Record().Artifact
	if _, err := first.Stop(context.Background(), syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}

	spec := testSpec(t, installed, "v1")
	spec.Installed = true
	var progress []string
	spec.Progress = func(msg string) { progress = append(progress, msg) }
	again := start(t, l, spec)
	waitHealthy(t, again, spec.Port)
	if got := again.Record().Artifact; got != installed {
		t.Errorf("runs %q; want the installed %q", got, installed)
	}
	if len(progress) != 0 {
		t.Errorf("progress %q; want no install step", progress)
	}

	gone := testSpec(t, filepath.Join(dir, "releases", "v0", "app"), "v0")
	gone.Installed = true
	if _, err := l.Start(context.Background(), gone); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("start of a removed release: %v; want an error naming the missing file", err)
	}
}

func TestLocalKillsAfterGrace(t *testing.T) {
	l := &Local{Command: "trap '' TERM; exec sleep 30", Dir: t.TempDir()}
	inst := start(t, l, testSpec(t, "", "v1"))
	pid := inst.Record().PID
	waitExec(t, pid, "sleep") // the trap is set: SIGTERM is ignored from here on
	start := time.Now()
	desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 300*time.Millisecond)
	if err != nil || !strings.Contains(desc, "ignored SIGTERM for 300ms; killed") {
		t.Fatalf("Stop = %q, %v; want killed after the grace", desc, err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("killed after %s; want at least the 300ms grace", took)
	}
	if Alive(pid) {
		t.Fatal("process alive after SIGKILL")
	}
	if err := inst.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Wait = %v; want 'signal: killed'", err)
	}
}

func TestLocalEarlyExitIsSeenAtOnce(t *testing.T) {
	l := &Local{Command: `echo "starting on $PORT"; echo "FATAL: cannot open database" >&2; exit 3`, Dir: t.TempDir()}
	spec := testSpec(t, "", "v1")
	inst := start(t, l, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := inst.Wait(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Wait = %v; want exit status 3 at once", err)
	}
	tail, _ := inst.LogTail(context.Background(), 10)
	if !strings.Contains(tail, "FATAL: cannot open database") || !strings.Contains(tail, "starting on "+strconv.Itoa(spec.Port)) {
		t.Errorf("log tail lacks the app's output:\n%s", tail)
	}
	if desc, err := inst.Stop(context.Background(), syscall.SIGTERM, time.Second); err != nil || !strings.Contains(desc, "already exited") {
		t.Errorf("Stop of an exited instance = %q, %v", desc, err)
	}
}

func TestLocalQuotesPlaceholdersAndSetsEnv(t *testing.T) {
	t.Setenv("BATON_ADMIN_TOKEN", "secret-token")
	src := filepath.Join(t.TempDir(), "my app's build.sh")
	script := "#!/bin/sh\necho \"arg=$1 port=$PORT color=$BATON_COLOR version=$BATON_VERSION id=$BATON_INSTANCE token=${BATON_ADMIN_TOKEN:-unset} cwd=$(pwd)\"\n"
	if err := os.WriteFile(src, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l := &Local{Command: "{artifact} {color}", Dir: dir, Env: []string{"EXTRA=1"}}
	spec := testSpec(t, src, "2.0.0+build.7")
	inst := start(t, l, spec)
	if err := inst.Wait(context.Background()); err != nil {
		tail, _ := inst.LogTail(context.Background(), 10)
		t.Fatalf("Wait = %v; log:\n%s", err, tail)
	}
	tail, _ := inst.LogTail(context.Background(), 1)
	want := fmt.Sprintf("arg=green port=%d color=green version=2.0.0+build.7 id=%s token=unset cwd=%s",
		spec.Port, spec.ID, filepath.Join(dir, "releases", "2.0.0+build.7"))
	if tail != want {
		t.Errorf("the app printed\n%q\nwant\n%q", tail, want)
	}
}

func TestLocalRefusesBadSpecs(t *testing.T) {
	l := &Local{Command: "{artifact} --port {port}", Dir: t.TempDir()}
	for _, tc := range []struct {
		name string
		mod  func(*Spec)
		want string
	}{
		{"shell in version", func(s *Spec) { s.Version = "1; rm -rf /" }, "version"},
		{"path in version", func(s *Spec) { s.Version = "../../etc" }, "version"},
		{"no artifact", func(s *Spec) { s.Artifact = "" }, "{artifact}"},
		{"bad colour", func(s *Spec) { s.Color = "red" }, "color"},
		{"bad port", func(s *Spec) { s.Port = 0 }, "port"},
	} {
		spec := testSpec(t, appBin, "v1")
		tc.mod(&spec)
		_, err := l.Start(context.Background(), spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want ErrInvalidSpec about %s", tc.name, err, tc.want)
		}
	}
	if _, err := (&Local{Dir: t.TempDir()}).Start(context.Background(), testSpec(t, "", "v1")); err == nil {
		t.Error("Start with an empty command succeeded")
	}
}

// TestLocalAdopt covers a restart of baton: a new launcher finds the
// instance by its record and stops it, but never signals a PID that no
// longer carries the instance's marker.
func TestLocalAdopt(t *testing.T) {
	l := &Local{Command: "exec sleep 30", Dir: t.TempDir()}
	inst := start(t, l, testSpec(t, "", "v1"))
	rec := inst.Record()
	waitExec(t, rec.PID, "sleep")

	other := rec
	other.ID = "someone-else"
	stranger, err := (&Local{}).Adopt(other)
	if err != nil {
		t.Fatal(err)
	}
	if alive, _ := stranger.Alive(context.Background()); alive {
		t.Error("a record with another marker is taken for the running process")
	}
	if desc, err := stranger.Stop(context.Background(), syscall.SIGTERM, time.Second); err != nil || !strings.Contains(desc, "already exited") {
		t.Errorf("Stop of a foreign pid = %q, %v", desc, err)
	}
	if !Alive(rec.PID) {
		t.Fatal("Stop signalled a process that is not the instance")
	}

	adopted, err := (&Local{}).Adopt(rec)
	if err != nil {
		t.Fatal(err)
	}
	if alive, _ := adopted.Alive(context.Background()); !alive {
		t.Fatal("adopted instance not alive")
	}
	if desc, err := adopted.Stop(context.Background(), syscall.SIGTERM, 5*time.Second); err != nil || !strings.Contains(desc, "exited") {
		t.Fatalf("Stop = %q, %v", desc, err)
	}
	if err := inst.Wait(context.Background()); err == nil {
		t.Error("the original handle's Wait = nil; want the SIGTERM exit")
	}
	sshRec := rec
	sshRec.Host, sshRec.Launcher = "deploy@app1:22", "ssh"
	if _, err := (&Local{}).Adopt(sshRec); !errors.Is(err, ErrNotAdoptable) {
		t.Errorf("Adopt of an SSH record: %v; want ErrNotAdoptable", err)
	}
}

// procStatus returns the value of a field of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return ""
}

// wantMode fails the test unless path has exactly mode's permission bits
// and, if gid >= 0, that group.
func wantMode(t *testing.T, path string, mode os.FileMode, gid int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != mode {
		t.Errorf("%s has mode %v; want %v", path, got, mode)
	}
	if st := fi.Sys().(*syscall.Stat_t); gid >= 0 && int(st.Gid) != gid {
		t.Errorf("%s has group %d; want %d", path, st.Gid, gid)
	}
}

// TestLocalReleasesAndLogsNotWorldReadable is issue 13, item 6: nothing
// baton installs or logs can be read by other users of the machine.
func TestLocalReleasesAndLogsNotWorldReadable(t *testing.T) {
	dir := t.TempDir()
	l := &Local{Command: "{artifact} --port {port} --version {version}", Dir: dir}
	spec := testSpec(t, appBin, "v1")
	inst := start(t, l, spec)
	waitHealthy(t, inst, spec.Port)
	rec := inst.Record()
	wantMode(t, filepath.Join(dir, "releases"), 0o700, -1)
	wantMode(t, filepath.Dir(rec.Artifact), 0o700, -1)
	wantMode(t, rec.Artifact, 0o700, -1)
	wantMode(t, filepath.Dir(rec.Log), 0o700, -1)
	wantMode(t, rec.Log, 0o600, -1)
}

// TestLocalRunUser is issue 13, item 8: with RunAs the app runs as that
// user and group (checked in /proc), without baton's capabilities, and can
// read its release and write its log, which no other user can read.
func TestLocalRunUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a user and switch to it (CI runs as root)")
	}
	name := fmt.Sprintf("baton-app-%d", os.Getpid())
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	runAs, err := LookupRunAs(name)
	if err != nil {
		t.Fatal(err)
	}
	// The state dir's parents must let the app user through, as /var/lib does.
	base := t.TempDir()
	if err := os.Chmod(filepath.Dir(base), 0o711); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := &Local{Command: "{artifact} --port {port} --version {version}", Dir: dir, User: runAs}
	spec := testSpec(t, appBin, "v1")
	inst := start(t, l, spec)
	waitHealthy(t, inst, spec.Port)
	pid := inst.Record().PID
	want := fmt.Sprint(runAs.UID)
	if uids := strings.Fields(procStatus(t, pid, "Uid")); len(uids) != 4 || uids[0] != want || uids[1] != want || uids[2] != want || uids[3] != want {
		t.Errorf("app runs with uids %v; want all %s", uids, want)
	}
	wantG := fmt.Sprint(runAs.GID)
	if gids := strings.Fields(procStatus(t, pid, "Gid")); len(gids) != 4 || gids[0] != wantG || gids[2] != wantG {
		t.Errorf("app runs with gids %v; want %s", gids, wantG)
	}
	if capEff := procStatus(t, pid, "CapEff"); capEff != "0000000000000000" {
		t.Errorf("app has capabilities %s; want none", capEff)
	}
	if env, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ")); !strings.Contains(string(env), "\x00USER="+name+"\x00") {
		t.Errorf("app environment lacks USER=%s", name)
	}
	rec := inst.Record()
	gid := int(runAs.GID)
	wantMode(t, dir, 0o710, gid)
	wantMode(t, filepath.Join(dir, "releases"), 0o750, gid)
	wantMode(t, filepath.Dir(rec.Artifact), 0o750, gid)
	wantMode(t, rec.Artifact, 0o750, gid)
	wantMode(t, filepath.Dir(rec.Log), 0o750, gid)
	wantMode(t, rec.Log, 0o640, gid)
	// The app user can read its release and its log, and not the state.
	canRead := func(path string) bool {
		return exec.Command("setpriv", "--reuid="+want, "--regid="+wantG, "--clear-groups", "--", "head", "-c1", path).Run() == nil
	}
	if !canRead(rec.Artifact) || !canRead(rec.Log) {
		t.Errorf("the app user cannot read its release or its log")
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if canRead(filepath.Join(dir, "state.json")) {
		t.Errorf("the app user can read baton's state file")
	}
	// The log is written through the descriptor baton opened: the app's
	// output arrives.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tail, _ := inst.LogTail(context.Background(), 50); strings.Contains(tail, "listening on") {
			break
		}
		if time.Now().After(deadline) {
			tail, _ := inst.LogTail(context.Background(), 50)
			t.Fatalf("the app's output is not in its log:\n%s", tail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if desc, err := inst.Stop(context.Background(), syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	} else if !strings.Contains(desc, "exited") {
		t.Errorf("stop: %s", desc)
	}
}

// TestLocalPruneKeepsTheNewestAndTheOnesInUse is issue 13, item 9: old
// releases and their logs go; the newest KeepReleases stay, and so do the
// ones in use (live, previous) however old.
func TestLocalPruneKeepsTheNewestAndTheOnesInUse(t *testing.T) {
	dir := t.TempDir()
	l := &Local{Command: "{artifact} {port}", Dir: dir, KeepReleases: 2}
	old := time.Now().Add(-time.Hour)
	var artifacts []string
	for i, v := range []string{"v1", "v2", "v3", "v4", "v5"} {
		a := filepath.Join(dir, "releases", v, "app.jar")
		if err := os.MkdirAll(filepath.Dir(a), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(a, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"blue-" + v + "-id" + v + ".log", "blue-" + v + "-id" + v + ".log.1"} {
			if err := os.WriteFile(filepath.Join(dir, "logs", name), []byte("log"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		when := old.Add(time.Duration(i) * time.Minute) // v5 is the newest
		if err := os.Chtimes(filepath.Dir(a), when, when); err != nil {
			t.Fatal(err)
		}
		artifacts = append(artifacts, a)
	}
	// v1 is what a rollback would start: kept although it is the oldest.
	desc, err := l.Prune(context.Background(), []string{artifacts[0], artifacts[4]})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	entries, _ := os.ReadDir(filepath.Join(dir, "releases"))
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"v1", "v4", "v5"}; !slices.Equal(left, want) {
		t.Errorf("releases left %v; want %v (prune said %q)", left, want, desc)
	}
	var logs []string
	entries, _ = os.ReadDir(filepath.Join(dir, "logs"))
	for _, e := range entries {
		logs = append(logs, e.Name())
	}
	want := []string{"blue-v1-idv1.log", "blue-v1-idv1.log.1", "blue-v4-idv4.log", "blue-v4-idv4.log.1", "blue-v5-idv5.log", "blue-v5-idv5.log.1"}
	if !slices.Equal(logs, want) {
		t.Errorf("logs left %v; want %v", logs, want)
	}
	if !strings.Contains(desc, "v2") || !strings.Contains(desc, "v3") {
		t.Errorf("prune said %q; want it to name v2 and v3", desc)
	}
}

// TestLocalRotatesTheLog is issue 13, item 9: an app that writes without
// end to stdout does not fill the disk; its log is cut at MaxLogBytes and
// the older parts kept in KeepLogs numbered files, while the app goes on
// writing to the same log.
func TestLocalRotatesTheLog(t *testing.T) {
	dir := t.TempDir()
	l := &Local{Command: `while :; do echo "line of the app on port {port} with some padding to make it longer"; sleep 0.001; done`,
		Dir: dir, MaxLogBytes: 4096, KeepLogs: 2}
	inst := start(t, l, testSpec(t, "", "v1"))
	log := inst.Record().Log
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	for rotations := 0; rotations < 4; {
		deadline := time.Now().Add(10 * time.Second)
		for size(log) <= 4096 {
			if time.Now().After(deadline) {
				t.Fatalf("the log did not grow past 4096 bytes: %d", size(log))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := l.RotateLogs(); err != nil {
			t.Fatal(err)
		}
		rotations++
		if s := size(log); s > 4096 {
			t.Fatalf("after rotation %d the log has %d bytes; want it cut", rotations, s)
		}
	}
	if size(log+".1") <= 0 || size(log+".2") <= 0 {
		t.Errorf("rotated logs: .1 %d bytes, .2 %d bytes; want both", size(log+".1"), size(log+".2"))
	}
	if size(log+".3") != -1 {
		t.Errorf("%s.3 exists; want at most KeepLogs=2 old parts", log)
	}
	wantMode(t, log+".1", 0o600, -1)
	// The app still writes to its log (its O_APPEND descriptor follows the
	// cut), and what it writes is readable through LogTail.
	deadline := time.Now().Add(5 * time.Second)
	for size(log) <= 0 {
		if time.Now().After(deadline) {
			t.Fatal("the app no longer writes to its log after the rotation")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if tail, _ := inst.LogTail(context.Background(), 1); !strings.Contains(tail, "line of the app") {
		t.Errorf("log tail %q", tail)
	}
}

// TestLocalStartTimeIdentifiesTheInstance: when the app's environment
// cannot be read (an app of another user, baton not root), the start time
// in /proc tells the instance from a process that reused its PID.
func TestLocalStartTimeIdentifiesTheInstance(t *testing.T) {
	l := &Local{Command: "exec sleep 30", Dir: t.TempDir()}
	inst := start(t, l, testSpec(t, "", "v1"))
	rec := inst.Record()
	if !(&localInstance{rec: rec}).startedAsRecorded() {
		at, _ := startedAt(rec.PID)
		t.Errorf("pid %d started at %s, recorded %s: not taken for the instance", rec.PID, at, rec.Started)
	}
	rec.Started = rec.Started.Add(-time.Hour) // an older instance whose PID was reused
	if (&localInstance{rec: rec}).startedAsRecorded() {
		t.Error("a process started an hour after the record is taken for the instance")
	}
}
