package sampleapp

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/syncbuf"
)

// buildApp builds examples/app into a temporary directory and returns the
// binary's path.
func buildApp(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			goTool = filepath.Join(root, "bin", "go")
		} else {
			t.Skipf("no go tool to build examples/app: %v", err)
		}
	}
	bin := filepath.Join(t.TempDir(), "app")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/batonproxy/baton/examples/app")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build examples/app: %v\n%s", err, out)
	}
	return bin
}

// appProcess is a running examples/app binary.
type appProcess struct {
	cmd     *exec.Cmd
	addr    string
	stderr  *syncbuf.Buffer
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid once exited is closed
}

// startApp starts bin with args and waits for its listening line. The
// process is killed at the end of the test if it is still running.
func startApp(t *testing.T, bin string, args ...string) *appProcess {
	t.Helper()
	stdout := newListenWatcher()
	p := &appProcess{stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("app stderr:\n%s", p.stderr)
		}
	})
	p.addr = stdout.waitAddr(t, 10*time.Second, p.exited)
	return p
}

// waitInFlight polls /stats until the app reports at least n requests in
// flight, so that a signal is sent only once the request under test is
// inside a handler.
func (p *appProcess) waitInFlight(t *testing.T, n int64) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.Get("http://" + p.addr + "/stats")
		if err != nil {
			t.Fatalf("GET /stats: %v", err)
		}
		var s Stats
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("decode /stats: %v", err)
		}
		if s.InFlight >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in_flight = %d after 5s; want %d", s.InFlight, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (p *appProcess) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("process still running %v after SIGTERM", timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	if p.waitErr != nil {
		t.Fatalf("wait: %v", p.waitErr)
	}
	return 0
}

type slowResult struct {
	status int
	body   string
	err    error
	at     time.Time
}

// slowGet starts GET path on a connection of its own (no keep-alive, so the
// client cannot silently retry on another connection) and reports the
// outcome on the returned channel.
func slowGet(addr, path string) <-chan slowResult {
	ch := make(chan slowResult, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			ch <- slowResult{err: err, at: time.Now()}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- slowResult{status: resp.StatusCode, body: string(b), err: err, at: time.Now()}
	}()
	return ch
}

// TestProcessSignal runs the real binary, because what happens on SIGTERM
// depends on the process exiting, not only on Main returning.
func TestProcessSignal(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("SIGTERM is not deliverable on windows")
	}
	bin := buildApp(t)

	t.Run("default drops requests in flight", func(t *testing.T) {
		p := startApp(t, bin, "--addr", "127.0.0.1:0", "--version", "blue")
		res := slowGet(p.addr, "/slow?ms=5000")
		p.waitInFlight(t, 1)

		sent := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-res:
			if r.err == nil {
				t.Errorf("slow request answered %d %q; want the connection dropped", r.status, r.body)
			}
			if d := r.at.Sub(sent); d > 2*time.Second {
				t.Errorf("slow request failed %v after SIGTERM; want < 2s", d)
			}
			t.Logf("slow request error: %v", r.err)
		case <-time.After(4 * time.Second):
			t.Fatal("slow request still pending 4s after SIGTERM")
		}
		if code := p.waitExit(t, 5*time.Second); code != 0 {
			t.Errorf("exit code %d; want 0", code)
		}
	})

	t.Run("ignore-term survives SIGTERM until SIGKILL", func(t *testing.T) {
		p := startApp(t, bin, "--addr", "127.0.0.1:0", "--version", "stuck", "--ignore-term")
		for range 2 {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		resp, err := http.Get("http://" + p.addr + "/")
		if err != nil {
			t.Fatalf("after two SIGTERMs the app does not answer: %v", err)
		}
		resp.Body.Close()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("still running after SIGKILL")
		}
	})

	t.Run("graceful finishes requests in flight", func(t *testing.T) {
		p := startApp(t, bin, "--addr", "127.0.0.1:0", "--version", "green", "--graceful")
		res := slowGet(p.addr, "/slow?ms=500")
		p.waitInFlight(t, 1)

		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var r slowResult
		select {
		case r = <-res:
		case <-time.After(10 * time.Second):
			t.Fatal("slow request still pending 10s after SIGTERM")
		}
		if r.err != nil || r.status != 200 || r.body != "green\n" {
			t.Errorf("slow request = %d %q, err %v; want 200 %q", r.status, r.body, r.err, "green\n")
		}
		if code := p.waitExit(t, 5*time.Second); code != 0 {
			t.Errorf("exit code %d; want 0", code)
		}
		if _, err := http.Get("http://" + p.addr + "/"); err == nil {
			t.Errorf("GET / after exit succeeded; want connection refused")
		}
	})
}
