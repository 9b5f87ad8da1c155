package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeployCancelledByCtrlC is issue 13, item 17: Ctrl-C on 'baton deploy'
// (SIGINT, what a Jenkins abort sends) while the new instance is being
// health-checked cancels the deploy on baton's side: the new instance is
// stopped, the old one keeps serving, and the CLI says "deploy cancelled"
// instead of "the admin API closed the stream before the operation
// finished".
func TestDeployCancelledByCtrlC(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--health-deadline", "60s", "--stop-timeout", "5s")
	b.start()
	if _, _, out, code := b.deploy("--artifact", appBin, "--version", "v1"); code != 0 {
		t.Fatalf("deploy v1 exited %d:\n%s", code, out)
	}
	before := mustStatus(t, b)
	// v2 listens but never passes its health check, so the deploy waits
	// in the health step until it is cancelled.
	sick := filepath.Join(t.TempDir(), "sick")
	if err := os.WriteFile(sick, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unhealthy := writeScript(t, "unhealthy.sh", fmt.Sprintf("exec %s \"$@\" --fail-health-file %s\n", appBin, sick))
	cli := start(t, []string{"BATON_ADMIN=http://" + b.admin, "BATON_ADMIN_TOKEN=" + b.token}, batonBin,
		"deploy", "--artifact", unhealthy, "--version", "v2")

	pidRE := regexp.MustCompile(`launch +started pid (\d+)`)
	var pid int
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := cli.out.String()
		if m := pidRE.FindStringSubmatch(out); m != nil && strings.Contains(out, "health ") {
			pid, _ = strconv.Atoi(m[1])
			break
		}
		if time.Now().After(deadline) || cli.exited() {
			t.Fatalf("the deploy never reached its health checks; output:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })

	if err := cli.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	cli.waitExit(t, 10*time.Second)
	out := cli.out.String()
	if code := cli.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out, "baton: deploy cancelled") ||
		strings.Contains(out, "closed the stream") {
		t.Errorf("cancelled deploy: exit %d, output:\n%s\nwant 1 and \"baton: deploy cancelled\"", code, out)
	}

	// baton stops the new instance and records the deploy as failed.
	deadline = time.Now().Add(20 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled deploy's instance (pid %d) still runs; baton's log:\n%s", pid, b.proc.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		st, err := b.status()
		if err == nil && st.Operation == nil {
			if st.Live != before.Live || len(st.History) != len(before.History)+1 || st.History[len(st.History)-1].OK {
				t.Errorf("after the cancelled deploy: live %s, history %+v; want %s, the deploy recorded as failed", st.Live, st.History, before.Live)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cancelled deploy is still running: %+v, %v", st.Operation, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Errorf("served by %s after the cancelled deploy; want v1", v)
	}
}
