// Package state keeps baton's durable state in one small versioned JSON file
// in the state directory. Writes are atomic (temp file, fsync, rename, fsync
// of the directory), so a crash leaves either the old file or the new one,
// never a torn one. An unreadable file is an error, not an empty state: a
// proxy that forgets which colour is live routes users to the wrong app.
//
// From version 2 the file holds one entry per service, keyed by the
// service's name; a version 1 file (one app) is read as the entry of the
// service DefaultService and rewritten as version 2 at the next save. Each
// entry is checked on its own: a bad one is an error that names its
// service, and saving another service's entry leaves it exactly as it was.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// FileName is the state file's name inside the state directory.
const FileName = "state.json"

// CurrentVersion is the schema version this build writes. It reads it and
// version 1.
const CurrentVersion = 2

// DefaultService names the service of a baton configured by flags alone,
// and the entry a version 1 file is read into.
const DefaultService = "default"

// MaxHistory is how many past deploys are kept.
const MaxHistory = 20

// State is everything baton must remember across restarts about one
// service.
type State struct {
	// Version is the schema version of the file the entry was read from;
	// Save ignores it.
	Version int       `json:"version,omitempty"`
	Live    string    `json:"live"` // "blue" or "green"
	Updated time.Time `json:"updated"`
	// Instances records what is known of the app on each colour, by colour.
	Instances map[string]Instance `json:"instances,omitempty"`
	History   []Deploy            `json:"history,omitempty"`
	// Pending is the operation that was running when this file was
	// written, nil if none: it is saved before an operation changes
	// anything and moved to History when it ends, so a Pending found at
	// start-up is an operation that baton was killed in the middle of.
	Pending *Deploy `json:"pending,omitempty"`
	// Previous is what was live before the last operation that moved
	// traffic: what 'baton rollback' goes back to. Nil until one has.
	Previous *Previous `json:"previous,omitempty"`
}

// Previous is the colour that was live before the last switch, deploy or
// rollback, and the instance baton had launched there, if any.
type Previous struct {
	Color string `json:"color"`
	// Instance is the instance that served on Color then; nil if baton
	// did not launch it. Its Artifact and AppVersion let a rollback start
	// it again after it was stopped.
	Instance *Instance `json:"instance,omitempty"`
}

// Instance is what baton knows of the app on one colour: for an instance
// that baton launched, enough to find it again after a restart and stop it.
type Instance struct {
	AppVersion string    `json:"app_version,omitempty"`
	Addr       string    `json:"addr"`
	PID        int       `json:"pid,omitempty"`
	Host       string    `json:"host,omitempty"` // "" for this machine; user@host:port over SSH
	Artifact   string    `json:"artifact,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	// ID marks the process (its BATON_INSTANCE environment variable), so
	// that a PID reused by another process is never signalled.
	ID string `json:"id,omitempty"`
	// Log is the path of the instance's output log on its host.
	Log string `json:"log,omitempty"`
	// Launcher is "local" or "ssh": which launcher started it.
	Launcher string `json:"launcher,omitempty"`
}

// Deploy is one past switch, deploy or rollback, or the one running
// (State.Pending).
type Deploy struct {
	ID       string        `json:"id"`
	Kind     string        `json:"kind"`              // "switch", "deploy" or "rollback"
	Version  string        `json:"version,omitempty"` // the app version a deploy started
	From     string        `json:"from"`
	To       string        `json:"to"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
	// Drained is how many requests were still in flight on the old colour
	// when the swap happened.
	Drained int64 `json:"drained"`
	// DrainDuration is how long the drain of the old colour took, and
	// Abandoned how many requests were still in flight at its deadline:
	// with Started, Duration and Drained they let a restarted baton
	// export the last switch's metrics again. Files written before they
	// existed read as zero.
	DrainDuration time.Duration `json:"drain_ns,omitempty"`
	Abandoned     int64         `json:"abandoned,omitempty"`
	// Interrupted is set when baton stopped (was killed, crashed, lost
	// power) in the middle of the operation; Error then says at which
	// point, as far as the state file tells.
	Interrupted bool `json:"interrupted,omitempty"`
	// Instance is, while the operation runs (State.Pending), the new
	// instance it launched, so that a baton restarted after a crash knows
	// of it and adopts it instead of leaving it running unknown.
	Instance *Instance `json:"instance,omitempty"`
}

// Store reads and writes the state file in a directory. The zero value is not
// usable; create it with NewStore. It is safe for concurrent use by the
// services of one baton process: saves of different services are
// serialised. One baton process owns a state directory.
type Store struct {
	dir string
	mu  sync.Mutex // held across the read-modify-write of a Save
}

// NewStore returns a Store for dir, creating dir (0700) if needed. It
// removes the temp files that a crash between the write and the rename of
// a Save leaves behind: the state file itself is then the old one, whole.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	s := &Store{dir: dir}
	stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix(FileName)+"*"))
	for _, p := range stale {
		_ = os.Remove(p) // best effort: a leftover is harmless, only untidy
	}
	return s, nil
}

// tempPrefix is the name prefix of WriteFileAtomic's temp files for a file
// named base.
func tempPrefix(base string) string { return "." + base + ".tmp-" }

// Path returns the state file's path.
func (s *Store) Path() string { return filepath.Join(s.dir, FileName) }

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Load reads the entry of DefaultService: the state of a baton with one
// service. See ServiceStore.Load.
func (s *Store) Load() (State, error) { return s.Service(DefaultService).Load() }

// Save writes the entry of DefaultService. See ServiceStore.Save.
func (s *Store) Save(st State) error { return s.Service(DefaultService).Save(st) }

// Service returns the store of one service's entry.
func (s *Store) Service(name string) *ServiceStore { return &ServiceStore{s: s, name: name} }

// ServiceStore reads and writes one service's entry of the state file. It
// is safe for concurrent use.
type ServiceStore struct {
	s    *Store
	name string
}

// Load reads the service's entry. It returns fs.ErrNotExist (wrapped) when
// there is no state file or no entry for the service yet, and a
// descriptive error naming the service when the entry cannot be trusted.
func (ss *ServiceStore) Load() (State, error) {
	entries, version, err := ss.s.read()
	if err != nil {
		return State{}, err
	}
	raw, ok := entries[ss.name]
	if !ok {
		return State{}, fmt.Errorf("state file %s has no entry for service %s: %w", ss.s.Path(), ss.name, fs.ErrNotExist)
	}
	return ss.s.decode(ss.name, raw, version)
}

// Save writes st as the service's entry, atomically with mode 0600,
// leaving every other service's entry as it was. It refuses to overwrite a
// state file it cannot read.
func (ss *ServiceStore) Save(st State) error {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, _, err := s.read()
	if IsNotExist(err) {
		entries, err = map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return fmt.Errorf("save state of service %s: %w", ss.name, err)
	}
	st.Version = 0
	if len(st.History) > MaxHistory {
		st.History = st.History[len(st.History)-MaxHistory:]
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state of service %s: %w", ss.name, err)
	}
	entries[ss.name] = b
	out, err := json.MarshalIndent(fileV2{Version: CurrentVersion, Services: entries}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return WriteFileAtomic(s.Path(), append(out, '\n'), 0o600)
}

// LoadAll reads every service's entry, checking each on its own. The error
// names every service whose entry is bad; the entries that are good are
// returned all the same, for a caller that reports rather than stops.
func (s *Store) LoadAll() (map[string]State, error) {
	entries, version, err := s.read()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Strings(names)
	all := make(map[string]State, len(entries))
	var errs []error
	for _, name := range names {
		st, err := s.decode(name, entries[name], version)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		all[name] = st
	}
	return all, errors.Join(errs...)
}

// fileV2 is the state file's layout from version 2 on. Entries stay raw
// so that saving one service rewrites no other's.
type fileV2 struct {
	Version  int                        `json:"version"`
	Services map[string]json.RawMessage `json:"services"`
}

// read returns the file's entries by service, and its version.
func (s *Store) read() (map[string]json.RawMessage, int, error) {
	b, err := os.ReadFile(s.Path())
	if err != nil {
		return nil, 0, fmt.Errorf("read state: %w", err)
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, 0, fmt.Errorf("state file %s is corrupt (%w); fix or remove it to start afresh", s.Path(), err)
	}
	switch head.Version {
	case 1:
		return map[string]json.RawMessage{DefaultService: b}, 1, nil
	case CurrentVersion:
		var f fileV2
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, 0, fmt.Errorf("state file %s is corrupt (%w); fix or remove it to start afresh", s.Path(), err)
		}
		if f.Services == nil {
			f.Services = map[string]json.RawMessage{}
		}
		return f.Services, CurrentVersion, nil
	}
	return nil, 0, fmt.Errorf("state file %s has version %d; this baton reads versions 1 and %d", s.Path(), head.Version, CurrentVersion)
}

// decode parses and checks one service's entry.
func (s *Store) decode(name string, raw json.RawMessage, version int) (State, error) {
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return State{}, fmt.Errorf("state file %s: service %s: entry is corrupt (%w); fix or remove the entry", s.Path(), name, err)
	}
	st.Version = version
	var bad []error
	if !isColor(st.Live) {
		bad = append(bad, fmt.Errorf("live colour %q is neither blue nor green", st.Live))
	}
	if p := st.Pending; p != nil && (!isColor(p.From) || !isColor(p.To)) {
		bad = append(bad, fmt.Errorf("pending operation %s goes from %q to %q: want blue and green", p.ID, p.From, p.To))
	}
	if p := st.Previous; p != nil && !isColor(p.Color) {
		bad = append(bad, fmt.Errorf("previous colour %q is neither blue nor green", p.Color))
	}
	for c := range st.Instances {
		if !isColor(c) {
			bad = append(bad, fmt.Errorf("instance recorded for colour %q, which is neither blue nor green", c))
		}
	}
	if err := errors.Join(bad...); err != nil {
		return State{}, fmt.Errorf("state file %s: service %s: %w; fix or remove the entry", s.Path(), name, err)
	}
	return st, nil
}

// WriteFileAtomic writes data to path so that readers see either the old
// content or the new, never a mix: it writes a temp file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix(filepath.Base(path))+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if testHookBeforeRename != nil {
		testHookBeforeRename(tmp)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		// Best effort: some filesystems refuse fsync on a directory.
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func isColor(s string) bool { return s == "blue" || s == "green" }

// testHookBeforeRename, if set, runs between the write of the temp file
// and its rename: tests use it to crash there.
var testHookBeforeRename func(tmp string)

// IsNotExist reports whether err from Load means there is no state file yet.
func IsNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
