package launcher

import (
	"context"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startListener runs a real child process that listens on a loopback port:
// python3's http.server stands in for an app. ignoreTerm makes it ignore
// SIGTERM, as a stuck app would.
func startListener(t *testing.T, ignoreTerm bool) (pid, port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	script := `import signal, socket, sys, time
if sys.argv[2] == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
time.sleep(60)`
	ign := "0"
	if ignoreTerm {
		ign = "1"
	}
	cmd := exec.Command("python3", "-c", script, strconv.Itoa(port), ign)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start python3 (the test stands in an app with it): %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf), "ready") {
		t.Fatalf("listener did not start: %q %v", buf, err)
	}
	return cmd.Process.Pid, port
}

func TestListenerPIDsFindsTheProcess(t *testing.T) {
	pid, port := startListener(t, false)
	pids, err := ListenerPIDs(port)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pids, pid) {
		t.Fatalf("ListenerPIDs(%d) = %v; want it to contain %d", port, pids, pid)
	}
	if slices.Contains(pids, os.Getpid()) {
		t.Errorf("ListenerPIDs includes the test process itself")
	}
}

// TestPortStopperOwnersNamesTheListener: the message that refuses a deploy
// onto a taken port names who holds it (issue 13, item 18).
func TestPortStopperOwnersNamesTheListener(t *testing.T) {
	pid, port := startListener(t, false)
	got := PortStopper{}.Owners(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if want := "pid " + strconv.Itoa(pid) + " (python3)"; got != want {
		t.Errorf("Owners = %q; want %q", got, want)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	free := l.Addr().String()
	l.Close()
	if got := (PortStopper{}).Owners(free); got != "" {
		t.Errorf("Owners of a free port = %q; want \"\"", got)
	}
}

func TestListenerPIDsNothingListening(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if _, err := ListenerPIDs(port); err == nil {
		t.Fatal("want ErrNoListener for a free port")
	}
}

func TestPortStopperTerminates(t *testing.T) {
	pid, port := startListener(t, false)
	desc, err := PortStopper{}.Stop(context.Background(), "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "exited") || !strings.Contains(desc, strconv.Itoa(pid)) {
		t.Errorf("description %q; want the pid and 'exited'", desc)
	}
	if Alive(pid) {
		t.Fatal("process still alive after Stop")
	}
}

func TestPortStopperKillsAfterGrace(t *testing.T) {
	pid, port := startListener(t, true)
	start := time.Now()
	desc, err := PortStopper{}.Stop(context.Background(), "127.0.0.1:"+strconv.Itoa(port), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(desc, "killed") {
		t.Errorf("description %q; want 'killed'", desc)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("killed after %s; want at least the 300ms grace", took)
	}
	if Alive(pid) {
		t.Fatal("process alive after SIGKILL")
	}
}

func TestPortStopperNothingToStop(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	desc, err := PortStopper{}.Stop(context.Background(), addr, time.Second)
	if err != nil || !strings.Contains(desc, "nothing to stop") {
		t.Fatalf("Stop on a free port = %q, %v; want nothing to stop", desc, err)
	}
}
