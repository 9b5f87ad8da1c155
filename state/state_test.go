package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	s, err := NewStore(filepath.Join(t.TempDir(), "nested", "dir"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !IsNotExist(err) {
		t.Fatalf("Load on empty dir: %v; want not-exist", err)
	}
	want := State{Live: "green", History: []Deploy{{ID: "a", From: "blue", To: "green", OK: true}}}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Live != "green" || len(got.History) != 1 || got.History[0].ID != "a" || got.Version != CurrentVersion {
		t.Fatalf("loaded %+v", got)
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(s.Dir())
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries; want only the state file (no temp files left)", len(entries))
	}
}

func TestHistoryIsBounded(t *testing.T) {
	s, _ := NewStore(t.TempDir())
	st := State{Live: "blue"}
	for i := range MaxHistory + 5 {
		st.History = append(st.History, Deploy{ID: string(rune('a' + i))})
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Load()
	if len(got.History) != MaxHistory || got.History[MaxHistory-1].ID != st.History[len(st.History)-1].ID {
		t.Fatalf("history len %d; want the newest %d", len(got.History), MaxHistory)
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	for name, content := range map[string]string{
		"torn":         `{"version":1,"li`,
		"new version":  `{"version":99,"live":"blue"}`,
		"bad colour":   `{"version":1,"live":"purple"}`,
		"bad pending":  `{"version":1,"live":"blue","pending":{"id":"x","kind":"deploy","from":"blue","to":"red"}}`,
		"bad previous": `{"version":1,"live":"blue","previous":{"color":"mauve"}}`,
		"bad instance": `{"version":1,"live":"blue","instances":{"pink":{"addr":"127.0.0.1:1"}}}`,
	} {
		s, _ := NewStore(t.TempDir())
		os.WriteFile(s.Path(), []byte(content), 0o600)
		_, err := s.Load()
		if err == nil || IsNotExist(err) || !strings.Contains(err.Error(), s.Path()) {
			t.Errorf("%s: Load = %v; want an error naming the file", name, err)
		}
	}
}

func TestWriteFileAtomicReadersNeverSeeATornFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	a := []byte(strings.Repeat("a", 256<<10))
	b := []byte(strings.Repeat("b", 256<<10))
	if err := WriteFileAtomic(p, a, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50 {
			data := a
			if i%2 == 0 {
				data = b
			}
			if err := WriteFileAtomic(p, data, 0o600); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for reads := 0; ; reads++ {
		select {
		case <-done:
			return
		default:
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		if string(got) != string(a) && string(got) != string(b) {
			t.Fatalf("read %d saw a torn file of %d bytes", reads, len(got))
		}
	}
}

func TestWriteFileAtomicReportsFailure(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing-dir", "f")
	if err := WriteFileAtomic(p, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("write into a missing dir: %v; want an error naming the path", err)
	}
}

// A crash between the write of the temp file and its rename leaves the old
// state file whole and a temp file beside it; the next start reads the old
// state and removes the leftover.
func TestCrashBeforeRenameKeepsOldState(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(State{Live: "blue", History: []Deploy{{ID: "first", OK: true}}}); err != nil {
		t.Fatal(err)
	}
	type crash struct{}
	var leftover string
	testHookBeforeRename = func(tmp string) {
		leftover = tmp
		panic(crash{}) // the process dies here: no deferred clean-up runs in a real crash either
	}
	t.Cleanup(func() { testHookBeforeRename = nil })
	func() {
		defer func() {
			if r := recover(); r != (crash{}) {
				t.Fatalf("recovered %v; want the simulated crash", r)
			}
		}()
		_ = s.Save(State{Live: "green", Pending: &Deploy{ID: "second", From: "blue", To: "green"}})
	}()
	testHookBeforeRename = nil
	if _, err := os.Stat(leftover); err != nil {
		t.Fatalf("the crash left no temp file: %v", err)
	}

	s2, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Load()
	if err != nil {
		t.Fatalf("Load after a crash before the rename: %v", err)
	}
	if got.Live != "blue" || len(got.History) != 1 || got.Pending != nil {
		t.Fatalf("loaded %+v; want the state saved before the crash", got)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("NewStore left the crash's temp file %s behind (stat: %v)", leftover, err)
	}
}

func TestPendingAndPreviousRoundTrip(t *testing.T) {
	s, _ := NewStore(t.TempDir())
	inst := &Instance{AppVersion: "v2", PID: 42, ID: "d2", Artifact: "/srv/releases/v2/app"}
	want := State{Live: "blue",
		Pending:  &Deploy{ID: "d2", Kind: "deploy", Version: "v2", From: "blue", To: "green", Instance: inst},
		Previous: &Previous{Color: "green", Instance: &Instance{AppVersion: "v1", Artifact: "/srv/releases/v1/app"}}}
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Pending == nil || got.Pending.Instance == nil || got.Pending.Instance.PID != 42 ||
		got.Previous == nil || got.Previous.Color != "green" || got.Previous.Instance.AppVersion != "v1" {
		t.Fatalf("loaded %+v; want pending and previous as saved", got)
	}
}
