package state

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// v1File is a state file as baton wrote it before services (version 1).
const v1File = `{
  "version": 1,
  "live": "green",
  "updated": "2026-11-20T10:00:00Z",
  "instances": {
    "green": {"app_version": "1.4.2", "addr": "127.0.0.1:8081", "pid": 4242, "artifact": "/var/lib/baton/releases/1.4.2/app.jar", "id": "abc", "launcher": "local"}
  },
  "history": [{"id": "d1", "kind": "deploy", "version": "1.4.2", "from": "blue", "to": "green", "started": "2026-11-20T09:59:58Z", "duration_ns": 2000000000, "ok": true, "drained": 3}],
  "previous": {"color": "blue"}
}
`

func TestVersion1FileIsTheDefaultService(t *testing.T) {
	s, _ := NewStore(t.TempDir())
	if err := os.WriteFile(s.Path(), []byte(v1File), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Service(DefaultService).Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Live != "green" || got.Instances["green"].PID != 4242 || len(got.History) != 1 || got.Previous.Color != "blue" {
		t.Fatalf("migrated entry = %+v; want the version 1 file's state", got)
	}
	if _, err := s.Service("shop").Load(); !IsNotExist(err) {
		t.Errorf("another service in a version 1 file: %v; want not-exist", err)
	}
	// The next save writes version 2, with the default entry unchanged.
	if err := s.Service("shop").Save(State{Live: "blue"}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(s.Path())
	var f struct {
		Version  int                        `json:"version"`
		Services map[string]json.RawMessage `json:"services"`
	}
	if err := json.Unmarshal(raw, &f); err != nil || f.Version != 2 || len(f.Services) != 2 {
		t.Fatalf("after a save: version %d, %d services (%v); want version 2 with default and shop:\n%s", f.Version, len(f.Services), err, raw)
	}
	again, err := s.Load()
	if err != nil || again.Live != "green" || again.Instances["green"].PID != 4242 {
		t.Errorf("default after the rewrite = %+v, %v; want it unchanged", again, err)
	}
}

func TestServicesAreSavedAndCheckedApart(t *testing.T) {
	s, _ := NewStore(t.TempDir())
	shop, api := s.Service("shop"), s.Service("api")
	if err := shop.Save(State{Live: "blue"}); err != nil {
		t.Fatal(err)
	}
	if err := api.Save(State{Live: "green"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := shop.Load(); st.Live != "blue" {
		t.Errorf("shop live = %q; want blue (api's save must not touch it)", st.Live)
	}
	// Break api's entry by hand: shop still loads, api's error names api,
	// and saving shop leaves api's bad entry for the operator to see.
	raw, _ := os.ReadFile(s.Path())
	broken := strings.Replace(string(raw), `"live": "green"`, `"live": "purple"`, 1)
	if broken == string(raw) {
		t.Fatalf("test setup: api's live colour not found in\n%s", raw)
	}
	os.WriteFile(s.Path(), []byte(broken), 0o600)
	if _, err := api.Load(); err == nil || !strings.Contains(err.Error(), "service api") || !strings.Contains(err.Error(), "purple") {
		t.Errorf("api.Load = %v; want an error naming service api and the bad colour", err)
	}
	if st, err := shop.Load(); err != nil || st.Live != "blue" {
		t.Errorf("shop.Load = %+v, %v; want blue: a bad entry of another service must not hide it", st, err)
	}
	all, err := s.LoadAll()
	if err == nil || !strings.Contains(err.Error(), "service api") || strings.Contains(err.Error(), "service shop") {
		t.Errorf("LoadAll error = %v; want one naming api only", err)
	}
	if all["shop"].Live != "blue" {
		t.Errorf("LoadAll returned %+v; want shop's good entry", all)
	}
	if err := shop.Save(State{Live: "green"}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Load(); err == nil || !strings.Contains(err.Error(), "purple") {
		t.Errorf("after saving shop, api.Load = %v; want api's entry kept as it was", err)
	}
}

func TestConcurrentSavesOfServicesLoseNothing(t *testing.T) {
	s, _ := NewStore(t.TempDir())
	names := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if err := s.Service(n).Save(State{Live: "blue", History: []Deploy{{ID: fmt.Sprint(i)}}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all, err := s.LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if h := all[n].History; len(h) != 1 || h[0].ID != "19" {
			t.Errorf("service %s: history %+v; want its last save", n, h)
		}
	}
}
