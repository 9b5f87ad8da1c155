package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/state"
)

// TestVersion1StateFileKeepsRouting starts baton on a state file as the
// release before services wrote it (version 1, live green) and checks that
// nothing about routing changes: green is live and serves, the history is
// kept, and the next operation rewrites the file as version 2 with the
// same state under the service "default".
func TestVersion1StateFileKeepsRouting(t *testing.T) {
	b := newBaton(t, "--no-stop")
	blue := startApp(t, b.blue, "v1")
	green := startApp(t, b.green, "v2")
	waitListening(t, blue, 10*time.Second)
	waitListening(t, green, 10*time.Second)
	v1 := `{
  "version": 1,
  "live": "green",
  "updated": "2026-11-20T10:00:00Z",
  "history": [{"id": "d1", "kind": "switch", "from": "blue", "to": "green", "started": "2026-11-20T09:59:58Z", "duration_ns": 2000000000, "ok": true, "drained": 0}]
}
`
	if err := os.WriteFile(filepath.Join(b.state, state.FileName), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	st, err := b.status()
	if err != nil || st.Live != "green" {
		t.Fatalf("live = %q (%v); want green, as the version 1 file says", st.Live, err)
	}
	if len(st.History) != 1 || st.History[0].ID != "d1" {
		t.Errorf("history = %+v; want the version 1 file's entry d1", st.History)
	}
	if _, _, v := get(t, b.http, "/"); v != "v2" {
		t.Fatalf("served by %s; want v2 (green)", v)
	}
	if out, code := b.cli("switch"); code != 0 {
		t.Fatalf("switch: exit %d\n%s", code, out)
	}
	if _, _, v := get(t, b.http, "/"); v != "v1" {
		t.Fatalf("after the switch served by %s; want v1 (blue)", v)
	}
	after := readState(t, b.state) // fails unless the file is now version 2
	if after.Live != "blue" || len(after.History) != 2 || after.History[0].ID != "d1" {
		t.Errorf("default service's entry after the switch = live %q, %d history entries; want blue with d1 kept", after.Live, len(after.History))
	}
	raw, _ := os.ReadFile(filepath.Join(b.state, state.FileName))
	if !strings.Contains(string(raw), `"default"`) {
		t.Errorf("state file has no entry for service default:\n%s", raw)
	}
}
