package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDeployWithProbe: 'baton deploy --probe URL' measures the deploy from a
// user's side and reports the verdict with it; a plot is written.
func TestDeployWithProbe(t *testing.T) {
	b := newBaton(t, "--run", appRun+" --startup-delay 200ms")
	b.start()
	if _, _, out, code := b.deploy("--artifact", appBin, "--version", "v1"); code != 0 {
		t.Fatalf("first deploy exited %d:\n%s", code, out)
	}
	plot := filepath.Join(t.TempDir(), "timeline.svg")
	out, code := b.cli("deploy", "--artifact", appBin, "--version", "v2",
		"--probe", "http://"+b.http+"/", "--probe-rate", "200", "--probe-plot", plot)
	stopInstancesOnCleanup(t, b)
	if code != 0 {
		t.Fatalf("deploy --probe exited %d:\n%s\nbaton log:\n%s", code, out, b.proc.out.String())
	}
	for _, want := range []string{"probe http://", "0 failed", "PASS", "v1", "v2", "timeline plot"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("plot %s: %v", plot, err)
	}

	// A probe that cannot reach anything fails the deploy even though the
	// switch itself worked.
	out, code = b.cli("deploy", "--artifact", appBin, "--version", "v3",
		"--probe", "http://"+freeAddr(t)+"/", "--probe-rate", "50")
	stopInstancesOnCleanup(t, b)
	if code != 1 || !strings.Contains(out, "probe failed") {
		t.Errorf("deploy with a failing probe exited %d; want 1 naming the probe:\n%s", code, out)
	}
}

// stopInstancesOnCleanup kills, when the test ends, the app instances baton
// reports now: deploys run through b.cli are not tracked by b.deploy, and
// launched apps outlive baton by design.
func stopInstancesOnCleanup(t *testing.T, b *baton) {
	t.Helper()
	st, err := b.status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, u := range st.Upstreams {
		if u.Instance != nil && u.Instance.PID > 0 {
			pid := u.Instance.PID
			t.Cleanup(func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
		}
	}
}
