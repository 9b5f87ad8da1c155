package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStatusSaysWhenTheInstanceExited: when a launched app dies, status
// says that its instance has exited, not only that its port refuses.
func TestStatusSaysWhenTheInstanceExited(t *testing.T) {
	b := newBaton(t, "--run", appRun)
	b.start()
	_, last, out, code := b.deploy("--artifact", appBin, "--version", "v1")
	if code != 0 {
		t.Fatalf("deploy exited %d:\n%s", code, out)
	}
	syscall.Kill(last.Deploy.PID, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := b.status()
		if err == nil {
			for _, u := range st.Upstreams {
				if u.Live && u.Health != nil && !u.Health.Healthy && strings.Contains(u.Health.Error, "has exited") {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never said the instance exited: %+v, %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
