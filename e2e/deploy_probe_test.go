package e2e

import (
	"os"
	"path/filepath"
	"strings"
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
	if code != 1 || !strings.Contains(out, "probe failed") {
		t.Errorf("deploy with a failing probe exited %d; want 1 naming the probe:\n%s", code, out)
	}
}
