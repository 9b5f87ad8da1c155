package e2e

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/internal/syncbuf"
	"github.com/batonproxy/baton/launcher"
)

// install copies src to dst atomically, as a package manager or `mv` would
// install a new baton over the running one.
func install(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func buildVersion(t *testing.T, dir, v string) string {
	t.Helper()
	out := filepath.Join(dir, "baton-"+v)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", out, "../cmd/baton")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", v, err, b)
	}
	return out
}

// upgradeBaton starts 'baton serve' from an installed path, with its output
// in a file: processes started by an upgrade inherit it and outlive the
// first one, so a pipe to the test would never close.
func upgradeBaton(t *testing.T, b *baton, bin string, extra ...string) (*exec.Cmd, string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "baton.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	args := append([]string{"serve", "--http", b.http, "--admin", b.admin, "--blue", b.blue, "--green", b.green,
		"--state-dir", b.state, "--health-interval", "100ms", "--pid-file", filepath.Join(b.state, "baton.pid")}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "BATON_ADMIN_TOKEN="+b.token)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	// Whatever baton is serving at the end is stopped by its PID.
	t.Cleanup(func() {
		if st, err := b.status(); err == nil && st.PID > 0 {
			syscall.Kill(st.PID, syscall.SIGKILL)
		}
		cmd.Process.Kill()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.status(); err == nil {
			return cmd, logPath
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("baton did not start:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for launcher.Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running after %s", pid, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUpgradeUnderLoadLosesNothing upgrades baton itself 10 times in a row,
// alternating two builds, under continuous load through the public port,
// once by signal and otherwise with 'baton upgrade'.
func TestUpgradeUnderLoadLosesNothing(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	builds := []string{buildVersion(t, dir, "upgrade-a"), buildVersion(t, dir, "upgrade-b")}
	installed := filepath.Join(dir, "baton")
	install(t, builds[0], installed)

	b := newBaton(t)
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)
	_, logPath := upgradeBaton(t, b, installed)
	st, err := b.status()
	if err != nil || st.BatonVersion != "upgrade-a" {
		t.Fatalf("status %+v, %v; want version upgrade-a", st, err)
	}
	pids := []int{st.PID}

	ctx, stopLoad := context.WithCancel(context.Background())
	reportc := make(chan *loadgen.Report, 1)
	go func() {
		reportc <- loadgen.Run(ctx, loadgen.Config{
			Target: b.http, Rate: 300, KeepAliveConns: 16,
			NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 300 * time.Millisecond, SlowMax: time.Second,
			PostFraction: 0.1,
		})
	}()
	time.Sleep(300 * time.Millisecond)

	for i := 1; i <= rounds; i++ {
		want := []string{"upgrade-a", "upgrade-b"}[i%2]
		install(t, builds[i%2], installed)
		old := pids[len(pids)-1]
		if i == 3 {
			// systemd's ExecReload and nginx habits: a signal does the same.
			syscall.Kill(old, syscall.SIGHUP)
		} else if out, code := b.cli("upgrade"); code != 0 {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("upgrade %d exited %d:\n%s\nbaton log:\n%s", i, code, out, log)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err = b.status()
			if err == nil && st.PID != old && st.BatonVersion == want {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(logPath)
				t.Fatalf("upgrade %d: status %+v, %v; want a new pid running %s\nbaton log:\n%s", i, st, err, want, log)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st.Live != "blue" {
			t.Fatalf("upgrade %d changed the live colour to %s", i, st.Live)
		}
		pids = append(pids, st.PID)
		// The old process finishes its requests and exits before the next
		// round (the slow requests bound how long that takes).
		waitGone(t, old, 10*time.Second)
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	rep := <-reportc
	t.Logf("load summary across %d upgrades:\n%s", rounds, rep.Summary())
	log, _ := os.ReadFile(logPath)
	failOnFailures(t, rep, "across upgrades: ", string(log))
	if rep.Total() < rounds*50 {
		t.Fatalf("only %d requests were sent", rep.Total())
	}
	if app.exited() {
		t.Fatal("an upgrade of baton stopped the app")
	}
	for _, pid := range pids[:len(pids)-1] {
		if launcher.Alive(pid) {
			t.Errorf("old baton pid %d is still running", pid)
		}
	}
	pidFile, err := os.ReadFile(filepath.Join(b.state, "baton.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) != strconv.Itoa(pids[len(pids)-1]) {
		t.Errorf("pid file holds %q (%v); want the serving pid %d", pidFile, err, pids[len(pids)-1])
	}
}

// TestUpgradeToBrokenBinaryKeepsServing: a new binary that exits at once,
// or never becomes ready, is a clean failure; the old baton keeps serving.
func TestUpgradeToBrokenBinaryKeepsServing(t *testing.T) {
	dir := t.TempDir()
	good := buildVersion(t, dir, "good")
	installed := filepath.Join(dir, "baton")
	install(t, good, installed)
	b := newBaton(t)
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)
	_, logPath := upgradeBaton(t, b, installed, "--upgrade-timeout", "1s")
	before, _ := b.status()

	for name, script := range map[string]string{
		"exits":    "#!/bin/sh\necho broken build >&2\nexit 3\n",
		"hangs":    "#!/bin/sh\nexec sleep 30\n",
		"not exec": "this is not a program\n",
	} {
		if err := os.WriteFile(installed+".new", []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Rename(installed+".new", installed)
		out, code := b.cli("upgrade")
		if code != 1 || !strings.Contains(out, "did not become ready") {
			t.Errorf("%s: upgrade exited %d; want 1 with the reason:\n%s", name, code, out)
		}
		st, err := b.status()
		if err != nil || st.PID != before.PID || st.BatonVersion != "good" {
			t.Fatalf("%s: after a failed upgrade status %+v, %v; want the old baton", name, st, err)
		}
		if code, _, v := get(t, b.http, "/"); code != 200 || v != "v1" {
			t.Fatalf("%s: after a failed upgrade GET / = %d from %q", name, code, v)
		}
	}
	// Each failure has its error line in baton's own log, not only in the CLI.
	log, _ := os.ReadFile(logPath)
	if n := strings.Count(string(log), `level=ERROR msg="upgrade failed; this baton keeps serving"`); n != 3 {
		t.Errorf("baton's log has %d error lines for 3 failed upgrades:\n%s", n, log)
	}
	// A deploy/switch is possible again: the failed upgrade released the lock.
	if out, code := b.cli("switch", "--to", "blue"); code != 1 || !strings.Contains(out, "already live") {
		t.Errorf("switch after failed upgrades: exit %d:\n%s", code, out)
	}
}

// TestSystemdSocketActivation hands baton its public and admin sockets the
// way systemd does (LISTEN_FDS, LISTEN_PID, fds from 3). The test keeps its
// own copies of the sockets open, so baton could not have bound the ports
// itself: serving on them proves it took the inherited ones.
func TestSystemdSocketActivation(t *testing.T) {
	b := newBaton(t)
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)
	var files []*os.File
	for _, addr := range []string{b.http, b.admin} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	// systemd sets LISTEN_PID to the service's PID after fork; the shell's
	// $$ is the PID that exec keeps.
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=http:admin exec "$0" "$@"`,
		batonBin, "serve", "--http", b.http, "--admin", b.admin, "--blue", b.blue, "--green", b.green, "--state-dir", b.state)
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), "BATON_ADMIN_TOKEN="+b.token)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.status(); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("baton exited:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton did not serve on the systemd sockets:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _, v := get(t, b.http, "/"); code != 200 || v != "v1" {
		t.Fatalf("GET / through the activated socket: %d from %q", code, v)
	}
}

// TestUpgradeKeepsStreamsOnTheOldProcess: a server-sent-events stream that
// is open on the old baton keeps flowing to its end after an upgrade; the
// old process exits only once it has finished.
func TestUpgradeKeepsStreamsOnTheOldProcess(t *testing.T) {
	dir := t.TempDir()
	installed := filepath.Join(dir, "baton")
	install(t, buildVersion(t, dir, "stream-a"), installed)
	next := buildVersion(t, dir, "stream-b")
	b := newBaton(t)
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)
	_, logPath := upgradeBaton(t, b, installed)
	before, _ := b.status()

	resp, err := http.Get("http://" + b.http + "/sse?n=20&interval=100ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan int, 1)
	go func() {
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				n++
			}
		}
		events <- n
	}()
	time.Sleep(300 * time.Millisecond)
	install(t, next, installed)
	if out, code := b.cli("upgrade"); code != 0 {
		t.Fatalf("upgrade: %d\n%s", code, out)
	}
	// The old process is still there while the stream runs.
	time.Sleep(200 * time.Millisecond)
	if !launcher.Alive(before.PID) {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("old baton exited while a stream was open on it; log:\n%s", log)
	}
	if n := <-events; n != 20 {
		t.Fatalf("stream delivered %d of 20 events across the upgrade", n)
	}
	waitGone(t, before.PID, 5*time.Second)
	if st, err := b.status(); err != nil || st.BatonVersion != "stream-b" {
		t.Fatalf("after upgrade: %+v, %v", st, err)
	}
}

// TestUpgradeKillsTheNewBinarysChildren (issue 13, items 12 and 13): a new
// binary that is a shell wrapper whose child never becomes ready is killed
// with its whole process group at the upgrade timeout, so nothing keeps
// the inherited listening sockets: the old baton keeps serving, and once it
// has stopped its ports can be bound again. baton's own log says why the
// upgrade failed.
func TestUpgradeKillsTheNewBinarysChildren(t *testing.T) {
	dir := t.TempDir()
	installed := filepath.Join(dir, "baton")
	install(t, batonBin, installed)
	b := newBaton(t)
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)
	cmd, logPath := upgradeBaton(t, b, installed, "--upgrade-timeout", "1s")
	before, _ := b.status()

	// The wrapper does not exec: its sleep child inherits every socket.
	sleepPID := filepath.Join(dir, "sleep.pid")
	script := "#!/bin/sh\nsleep 30 &\necho $! > " + sleepPID + "\nwait\n"
	if err := os.WriteFile(installed+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(installed+".new", installed); err != nil {
		t.Fatal(err)
	}
	out, code := b.cli("upgrade")
	if code != 1 || !strings.Contains(out, "timed out") {
		t.Fatalf("upgrade exited %d; want 1, timed out:\n%s", code, out)
	}
	b2, err := os.ReadFile(sleepPID)
	if err != nil {
		t.Fatalf("the wrapper did not start its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b2)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	waitGone(t, pid, 5*time.Second)

	if code, _, v := get(t, b.http, "/"); code != 200 || v != "v1" {
		t.Fatalf("after the failed upgrade GET / = %d from %q", code, v)
	}
	st, err := b.status()
	if err != nil || st.PID != before.PID {
		t.Fatalf("after the failed upgrade status %+v, %v; want the old baton", st, err)
	}
	log, _ := os.ReadFile(logPath)
	if !strings.Contains(string(log), "upgrade failed") || !strings.Contains(string(log), "timed out") {
		t.Errorf("baton's log has no error line for the failed upgrade:\n%s", log)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	waitGone(t, before.PID, 10*time.Second)
	for _, addr := range []string{b.http, b.admin} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("after baton stopped, %s cannot be bound: %v", addr, err)
			continue
		}
		ln.Close()
	}
}
