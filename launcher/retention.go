// This file keeps the disk from filling up: old releases and their logs
// are removed after a deploy, and app logs are cut when they grow too big.

package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Retention defaults.
const (
	// DefaultKeepReleases is how many of the newest releases Prune keeps,
	// besides the ones in use.
	DefaultKeepReleases = 5
	// DefaultMaxLogBytes is the size at which RotateLogs cuts an app log.
	DefaultMaxLogBytes = 100 << 20
	// DefaultKeepLogs is how many cut-off parts of an app log RotateLogs
	// keeps (name.log.1 the newest).
	DefaultKeepLogs = 3
)

// Prune removes the releases under Dir/releases but the newest
// KeepReleases (by the time they were installed) and those holding an
// artifact of inUse (the live instance's, and the one a rollback would start
// again), with the logs of the deploys of the removed versions. It returns
// what it removed, "" if nothing. A KeepReleases of 0 means
// DefaultKeepReleases; a negative one keeps everything.
func (l *Local) Prune(_ context.Context, inUse []string) (string, error) {
	keepN := l.KeepReleases
	if keepN == 0 {
		keepN = DefaultKeepReleases
	}
	if keepN < 0 {
		return "", nil
	}
	base, err := filepath.Abs(l.Dir)
	if err != nil {
		return "", fmt.Errorf("launcher dir %q: %w", l.Dir, err)
	}
	relDir := filepath.Join(base, "releases")
	entries, err := os.ReadDir(relDir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("prune releases: %w", err)
	}
	type release struct {
		version string
		mtime   time.Time
	}
	var rels []release
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		rels = append(rels, release{e.Name(), fi.ModTime()})
	}
	slices.SortFunc(rels, func(a, b release) int { return b.mtime.Compare(a.mtime) })
	newestFirst := make([]string, len(rels))
	for i, r := range rels {
		newestFirst[i] = r.version
	}
	kept, old := pruneChoice(newestFirst, keepN, relDir, inUse, string(filepath.Separator))
	var removed []string
	var errs []error
	for _, v := range old {
		if err := os.RemoveAll(filepath.Join(relDir, v)); err != nil {
			errs = append(errs, fmt.Errorf("remove release %s: %w", v, err))
			continue
		}
		removed = append(removed, v)
	}
	if len(removed) == 0 {
		return "", errors.Join(errs...)
	}
	logs, _ := os.ReadDir(filepath.Join(base, "logs"))
	var names []string
	for _, e := range logs {
		names = append(names, e.Name())
	}
	nlogs := 0
	for _, name := range pruneLogs(names, kept, removed) {
		if err := os.Remove(filepath.Join(base, "logs", name)); err != nil {
			errs = append(errs, fmt.Errorf("remove log: %w", err))
			continue
		}
		nlogs++
	}
	return pruneSummary(removed, nlogs, kept), errors.Join(errs...)
}

// pruneChoice splits the release versions, newest first, into those to
// keep (the first keepN, and those that hold an artifact of inUse, paths
// under relDir with separator sep) and those to remove.
func pruneChoice(newestFirst []string, keepN int, relDir string, inUse []string, sep string) (kept, removed []string) {
	used := map[string]bool{}
	for _, a := range inUse {
		if rest, ok := strings.CutPrefix(a, relDir+sep); ok {
			used[strings.Split(rest, sep)[0]] = true
		}
	}
	for i, v := range newestFirst {
		if i < keepN || used[v] {
			kept = append(kept, v)
		} else {
			removed = append(removed, v)
		}
	}
	return kept, removed
}

// pruneLogs returns the log file names that belong to the deploys of the
// removed versions. A log is COLOR-VERSION-ID.log[.N]; a version may
// itself hold '-', so a log whose name fits a kept version is kept.
func pruneLogs(names, kept, removed []string) []string {
	var out []string
	for _, name := range names {
		if logOf(name, removed) && !logOf(name, kept) {
			out = append(out, name)
		}
	}
	return out
}

func pruneSummary(removed []string, nlogs int, kept []string) string {
	return fmt.Sprintf("removed %d old release(s) (%s) and %d log file(s); kept %s", len(removed), strings.Join(removed, ", "), nlogs, strings.Join(kept, ", "))
}

// logOf reports whether the log file name belongs to a deploy of one of
// versions.
func logOf(name string, versions []string) bool {
	for _, c := range []string{"blue-", "green-"} {
		rest, ok := strings.CutPrefix(name, c)
		if !ok {
			continue
		}
		for _, v := range versions {
			if strings.HasPrefix(rest, v+"-") {
				return true
			}
		}
	}
	return false
}

// RotateLogs cuts every app log under Dir/logs that has grown past
// MaxLogBytes: its content goes to name.log.1 (the older parts move up to
// .2 and so on, up to KeepLogs of them) and the log itself is emptied in
// place. The app keeps writing to the same file, at its new end: baton
// opened it for appending. Lines the app writes between the copy and the
// cut are lost. A MaxLogBytes of 0 means DefaultMaxLogBytes; a negative one
// never cuts. Zero KeepLogs means DefaultKeepLogs.
func (l *Local) RotateLogs() error {
	maxBytes, keep := l.MaxLogBytes, l.KeepLogs
	if maxBytes == 0 {
		maxBytes = DefaultMaxLogBytes
	}
	if maxBytes < 0 {
		return nil
	}
	if keep <= 0 {
		keep = DefaultKeepLogs
	}
	dir := filepath.Join(l.Dir, "logs")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotate logs: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() <= maxBytes {
			continue
		}
		if err := rotate(filepath.Join(dir, e.Name()), keep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RotateLogsEvery runs RotateLogs every d until ctx is done, logging what
// fails.
func (l *Local) RotateLogsEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.RotateLogs(); err != nil && l.Logger != nil {
			l.Logger.Warn("could not rotate app logs", "err", err)
		}
	}
}

// rotate shifts path.1 … path.(keep-1) up by one, copies path to path.1
// with path's mode and group, and empties path.
func rotate(path string, keep int) error {
	_ = os.Remove(path + "." + strconv.Itoa(keep))
	for n := keep - 1; n >= 1; n-- {
		if err := os.Rename(path+"."+strconv.Itoa(n), path+"."+strconv.Itoa(n+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate %s: %w", path, err)
		}
	}
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("rotate %s: %w", path, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("rotate %s: %w", path, err)
	}
	out, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("rotate %s: %w", path, err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = copyAccess(fi, path+".1")
	}
	if err == nil {
		err = os.Truncate(path, 0)
	}
	if err != nil {
		return fmt.Errorf("rotate %s: %w", path, err)
	}
	return nil
}

// copyAccess gives path the permission bits and group of fi: a cut-off
// part of a log is for the same readers as the log.
func copyAccess(fi os.FileInfo, path string) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(path, -1, int(st.Gid)); err != nil {
			return err
		}
	}
	return os.Chmod(path, fi.Mode().Perm())
}
