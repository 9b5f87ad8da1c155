package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDeployRunUser is issue 13, item 8, through the real binary: with
// --run-user the deployed app runs as that user (its uid in /proc), serves,
// and the deploy's release and log are for baton and the app's group only.
func TestDeployRunUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a user and switch to it (CI runs as root)")
	}
	name := fmt.Sprintf("baton-e2e-%d", os.Getpid())
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	b := newBaton(t, "--run", appRun, "--run-user", name)
	// The state dir's parents must let the app's user through, as /var/lib does.
	if err := os.Chmod(filepath.Dir(b.state), 0o711); err != nil {
		t.Fatal(err)
	}
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s\nbaton's log:\n%s", code, out, b.proc.out.String())
	}
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(last.Deploy.PID), "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") {
			want := u.Uid
			if f[0] == "Gid:" {
				want = u.Gid
			}
			if f[1] != want || f[2] != want {
				t.Errorf("app %s %v; want %s", f[0], f[1:], want)
			}
		}
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Errorf("served by %q; want v1", v)
	}
	for _, p := range []string{filepath.Join(b.state, "releases", "v1", "app"), filepath.Join(b.state, "logs")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s has mode %v: readable by others", p, fi.Mode().Perm())
		}
	}
}
