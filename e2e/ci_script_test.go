package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCIDeployScript runs examples/ci/deploy.sh, the deploy step of the
// Jenkins and GitHub Actions examples, against a real baton: a good build
// deploys (exit 0, the new version serves), with a probe too; a build
// whose app fails its health check fails the job (exit 1) with baton's
// reason, and the old version keeps serving; wrong inputs exit 2 saying
// which. The admin token never appears in the job's output.
func TestCIDeployScript(t *testing.T) {
	b := newBaton(t, "--run", appRun, "--health-deadline", "3s")
	b.start()
	script, err := filepath.Abs("../examples/ci/deploy.sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(env ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("bash", script)
		cmd.Env = append(os.Environ(), "BATON="+batonBin, "BATON_ADMIN=http://"+b.admin, "BATON_ADMIN_TOKEN="+b.token)
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), b.token) {
			t.Errorf("the job's output shows the admin token:\n%s", out)
		}
		return string(out), code
	}

	out, code := run("BATON_ARTIFACT="+appBin, "BATON_VERSION=41")
	stopInstancesOnCleanup(t, b)
	if code != 0 || !strings.Contains(out, "version 41 is live") {
		t.Fatalf("good build: exit %d; want 0 and the version live:\n%s", code, out)
	}
	if _, _, v := get(t, b.http, "/"); v != "41" {
		t.Fatalf("after the good build %q serves; want 41", v)
	}
	out, code = run("BATON_ARTIFACT="+appBin, "BATON_VERSION=42", "BATON_PROBE_URL=http://"+b.http+"/")
	stopInstancesOnCleanup(t, b)
	if code != 0 || !strings.Contains(out, "PASS") {
		t.Fatalf("good build with a probe: exit %d; want 0 and the probe's verdict:\n%s", code, out)
	}

	failFile := filepath.Join(t.TempDir(), "fail")
	os.WriteFile(failFile, nil, 0o600)
	sick := writeScript(t, "sick.sh", fmt.Sprintf("exec %s \"$@\" --fail-health-file %s\n", appBin, failFile))
	out, code = run("BATON_ARTIFACT="+sick, "BATON_VERSION=43")
	if code != 1 {
		t.Fatalf("a build that fails its health check: exit %d; want 1:\n%s", code, out)
	}
	for _, want := range []string{"health check failed", "status 500", "the deploy of version 43 failed", "still serves"} {
		if !strings.Contains(out, want) {
			t.Errorf("the failed job's output lacks %q:\n%s", want, out)
		}
	}
	if _, _, v := get(t, b.http, "/"); v != "42" {
		t.Errorf("after the failed build %q serves; want 42 still", v)
	}

	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"BATON_ARTIFACT=" + appBin}, "BATON_VERSION is not set"},
		{[]string{"BATON_ARTIFACT=/nonexistent/app.jar", "BATON_VERSION=44"}, "is not a file"},
		{[]string{"BATON_ARTIFACT=" + appBin, "BATON_VERSION=44", "BATON=/nonexistent/baton"}, "not on PATH"},
	} {
		if out, code := run(c.env...); code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("inputs %q: exit %d; want 2 saying %q:\n%s", c.env, code, c.want, out)
		}
	}
}
