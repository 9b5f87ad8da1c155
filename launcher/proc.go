// This file finds and stops processes that baton did not start itself: the
// app a user started on a port, found as `fuser PORT/tcp` would find it, by
// reading /proc.

package launcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoListener is returned by ListenerPIDs when no process listens on the port.
var ErrNoListener = errors.New("no process listens on the port")

// procRoot is /proc; tests may point it elsewhere.
var procRoot = "/proc"

// ListenerPIDs returns the IDs of the processes that hold a TCP socket
// listening on port (IPv4 or IPv6, any address). Several processes can share
// one listening socket (pre-fork servers); all are returned. Processes of
// other users are only visible to root, as with fuser.
func ListenerPIDs(port int) ([]int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"net/tcp", "net/tcp6"} {
		if err := listeningInodes(filepath.Join(procRoot, f), port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if len(inodes) == 0 {
		return nil, fmt.Errorf("port %d: %w", port, ErrNoListener)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to see
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				pids = append(pids, pid)
				break
			}
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("port %d: a socket listens but its process is not visible (run baton as the app's user or root): %w", port, ErrNoListener)
	}
	return pids, nil
}

// listeningInodes adds to inodes the socket inodes of /proc/net/tcp{,6}
// entries in state LISTEN (0A) on port.
func listeningInodes(path string, port int, inodes map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		local, state, inode := fields[1], fields[3], fields[9]
		if state == "0A" && strings.HasSuffix(local, want) && inode != "0" {
			inodes[inode] = true
		}
	}
	return sc.Err()
}

// Alive reports whether pid names a running process: one of its threads
// has not exited yet. A process whose threads have all exited (a zombie not
// yet reaped by its parent) counts as gone: it serves nothing and holds no
// socket. A zombie thread-group leader whose other threads still run counts
// as alive: a JVM's main thread shows as a zombie for a few milliseconds
// while its other threads still hold the listening socket.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return liveTask(pid) != ""
}

// liveTask returns the /proc directory of a thread of pid that has not
// exited, or "" if there is none. The leader comes first: it is the one to
// look at while the process runs normally.
func liveTask(pid int) string {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if running(filepath.Join(dir, "stat")) {
		return dir
	}
	tasks, err := os.ReadDir(filepath.Join(dir, "task"))
	if err != nil {
		return ""
	}
	for _, t := range tasks {
		td := filepath.Join(dir, "task", t.Name())
		if running(filepath.Join(td, "stat")) {
			return td
		}
	}
	return ""
}

// running reports whether the stat file at path names a task that has not
// exited (neither zombie nor dead).
func running(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// startedAt returns when pid started: its start time in /proc/PID/stat, in
// clock ticks since boot, plus the boot time of /proc/stat. It is exact to
// about a second (the boot time's precision).
func startedAt(pid int) (time.Time, bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return time.Time{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return time.Time{}, false
	}
	// After the command name: state is field 3, starttime field 22.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return time.Time{}, false
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	st, err := os.ReadFile(filepath.Join(procRoot, "stat"))
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			// USER_HZ, the unit of /proc's clock ticks, is 100 on Linux.
			return time.Unix(boot, 0).Add(time.Duration(ticks) * 10 * time.Millisecond), true
		}
	}
	return time.Time{}, false
}

// portFreeTimeout bounds how long a stop waits for the stopped app's port to
// have no listener any more, after the process itself has gone.
const portFreeTimeout = 5 * time.Second

// waitPortFree waits up to d until nothing listens on port (in this network
// namespace), and reports whether that happened. A port of 0 is free.
func waitPortFree(ctx context.Context, port int, d time.Duration) bool {
	if port <= 0 {
		return true
	}
	deadline := time.Now().Add(d)
	for {
		inodes := map[string]bool{}
		for _, f := range []string{"net/tcp", "net/tcp6"} {
			_ = listeningInodes(filepath.Join(procRoot, f), port, inodes)
		}
		if len(inodes) == 0 {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Terminate sends SIGTERM to pid, waits up to grace for it to exit, then
// sends SIGKILL and waits for it to go. killed reports whether SIGKILL was
// needed. A process that is already gone is not an error.
func Terminate(ctx context.Context, pid int, grace time.Duration) (killed bool, err error) {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("signal pid %d: %w", pid, err)
	}
	if waitGone(ctx, pid, grace) {
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return false, fmt.Errorf("kill pid %d: %w", pid, err)
	}
	if !waitGone(context.WithoutCancel(ctx), pid, 5*time.Second) {
		return true, fmt.Errorf("pid %d still alive 5s after SIGKILL", pid)
	}
	return true, nil
}

func waitGone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for Alive(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Owners names the local processes that listen on addr's port, as
// "pid 4242 (java)", joined by ", "; "" if none can be seen.
func (PortStopper) Owners(addr string) string {
	port := addrPort(addr)
	if port == 0 {
		return ""
	}
	pids, err := ListenerPIDs(port)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(pids))
	for _, pid := range pids {
		comm, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "comm"))
		if err != nil {
			names = append(names, "pid "+strconv.Itoa(pid))
			continue
		}
		names = append(names, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return strings.Join(names, ", ")
}

// PortStopper stops the local process listening on an app's port, as
// `fuser -k -TERM PORT/tcp` followed by a timed SIGKILL would. It is what the
// switcher uses when baton did not launch the app itself.
type PortStopper struct{}

// Stop terminates every process listening on addr's port. Nothing listening
// is not an error: the app is already gone.
func (PortStopper) Stop(ctx context.Context, addr string, grace time.Duration) (string, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("stop %s: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", fmt.Errorf("stop %s: port %q: %w", addr, portStr, err)
	}
	pids, err := ListenerPIDs(port)
	if errors.Is(err, ErrNoListener) {
		return fmt.Sprintf("nothing listens on port %d; nothing to stop", port), nil
	}
	if err != nil {
		return "", fmt.Errorf("stop %s: %w", addr, err)
	}
	var (
		parts []string
		errs  []error
	)
	for _, pid := range pids {
		t := time.Now()
		killed, err := Terminate(ctx, pid, grace)
		switch {
		case err != nil:
			errs = append(errs, err)
		case killed:
			parts = append(parts, fmt.Sprintf("pid %d ignored SIGTERM for %s; killed", pid, grace))
		default:
			parts = append(parts, fmt.Sprintf("pid %d exited %s after SIGTERM", pid, time.Since(t).Round(time.Millisecond)))
		}
	}
	if len(errs) == 0 && !waitPortFree(ctx, port, portFreeTimeout) {
		parts = append(parts, fmt.Sprintf("port %d still has a listener %s later", port, portFreeTimeout))
	}
	return strings.Join(parts, "; "), errors.Join(errs...)
}
