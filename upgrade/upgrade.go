// Package upgrade replaces a running baton with a new binary without closing
// its listening sockets, and takes sockets from systemd socket activation.
//
// The model is cloudflare/tableflip's: the running process starts a copy of
// its own executable (same path, same arguments), hands it the listening
// sockets as inherited file descriptors, and waits until the new process
// reports ready. Only then does the old one stop accepting, finish its
// requests in flight and exit. At any time there are at most two processes,
// one upgrade runs at a time, and a new process that fails to start or never
// becomes ready is killed while the old one keeps serving, and so is any
// process it left holding the listening sockets (leftovers_linux.go).
//
// Sockets are looked up in this order: inherited from a previous baton,
// passed by systemd (LISTEN_FDS, matched by LISTEN_FDNAMES or by port),
// opened anew. Whatever the source, they are registered with the upgrader so
// that the next upgrade hands them on.
package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// DefaultTimeout bounds how long a new process may take to become ready.
const DefaultTimeout = time.Minute

// ErrInProgress is returned when an upgrade is asked for while one runs or
// while the previous process is still finishing its requests.
var ErrInProgress = errors.New("an upgrade is already in progress")

// Upgrader hands listening sockets to a new process. Create it with New, call
// Listen for every socket, then Ready once serving. It is safe for
// concurrent use.
//
// A nil *Upgrader is valid: it opens sockets itself, never upgrades, and its
// Exit channel never fires. Only one non-nil Upgrader can exist per process
// (tableflip's rule), so code that runs several servers in one process, such
// as tests, uses nil.
type Upgrader struct {
	tf      *tableflip.Upgrader
	systemd map[string]*os.File // by name ("http", "https", "admin") or address

	mu        sync.Mutex
	listeners []net.Listener // every socket Listen returned: what a new process inherits
}

// New returns an Upgrader. pidFile, if set, receives the PID of the process
// that is ready (for systemd's PIDFile=). timeout bounds an upgrade.
func New(pidFile string, timeout time.Duration) (*Upgrader, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tf, err := tableflip.New(tableflip.Options{PIDFile: pidFile, UpgradeTimeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("upgrader: %w", err)
	}
	u := &Upgrader{tf: tf}
	if !tf.HasParent() {
		u.systemd, err = systemdFiles()
		if err != nil {
			tf.Stop()
			return nil, err
		}
	}
	return u, nil
}

// HasParent reports whether this process was started by an upgrade.
func (u *Upgrader) HasParent() bool { return u != nil && u.tf.HasParent() }

// Listen returns a TCP listener for addr, known to the rest of baton as
// name ("http", "https" or "admin"): inherited, from systemd, or new.
func (u *Upgrader) Listen(name, addr string) (net.Listener, error) {
	if u == nil {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
		}
		return ln, nil
	}
	ln, err := u.listen(name, addr)
	if err == nil {
		u.mu.Lock()
		u.listeners = append(u.listeners, ln)
		u.mu.Unlock()
	}
	return ln, err
}

func (u *Upgrader) listen(name, addr string) (net.Listener, error) {
	ln, err := u.tf.Fds.Listener("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener %s: inherited socket: %w", name, addr, err)
	}
	if ln != nil {
		return ln, nil
	}
	if f := u.systemdFile(name, addr); f != nil {
		sl, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("%s listener %s: systemd socket: %w", name, addr, err)
		}
		f.Close() // FileListener dup'ed it
		if err := u.tf.Fds.AddListener("tcp", addr, sl.(*net.TCPListener)); err != nil {
			sl.Close()
			return nil, fmt.Errorf("%s listener %s: %w", name, addr, err)
		}
		return sl, nil
	}
	ln, err = u.tf.Fds.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener on %s: %w", name, addr, err)
	}
	return ln, nil
}

// Ready tells a parent baton (if any) that this process serves, writes the
// PID file, and closes inherited sockets nobody asked for.
func (u *Upgrader) Ready() error {
	if u == nil {
		return nil
	}
	return u.tf.Ready()
}

// WaitForParent blocks until the baton that started this one has exited.
func (u *Upgrader) WaitForParent(ctx context.Context) error {
	if u == nil {
		return nil
	}
	return u.tf.WaitForParent(ctx)
}

// Upgrade starts the new binary and returns once it is ready (nil) or has
// failed (the old process keeps serving). It first waits, up to ctx, for a
// previous baton that is still finishing its requests to exit.
func (u *Upgrader) Upgrade(ctx context.Context) error {
	if u == nil {
		return errors.New("upgrades are not enabled in this process")
	}
	if err := u.tf.WaitForParent(ctx); err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: the previous baton is still finishing its requests", ErrInProgress)
	}
	err := u.tf.Upgrade()
	if err != nil && strings.Contains(err.Error(), "in progress") {
		return fmt.Errorf("%w", ErrInProgress)
	}
	if err != nil {
		u.mu.Lock()
		lns := u.listeners
		u.mu.Unlock()
		if killed := killLeftovers(lns); len(killed) > 0 {
			err = fmt.Errorf("%w; killed %s, which the new binary left holding baton's listening sockets", err, strings.Join(killed, ", "))
		}
	}
	return err
}

// Exit is closed when an upgrade succeeded and this process should finish
// its requests and exit.
func (u *Upgrader) Exit() <-chan struct{} {
	if u == nil {
		return nil
	}
	return u.tf.Exit()
}

// Stop prevents further upgrades; call it on shutdown.
func (u *Upgrader) Stop() {
	if u != nil {
		u.tf.Stop()
	}
}

// systemdFiles returns the sockets systemd passed with LISTEN_FDS, keyed by
// their LISTEN_FDNAMES name when set and always by local address. The
// variables are unset so that children do not misread them.
func systemdFiles() (map[string]*os.File, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if fds == "" {
		return nil, nil
	}
	defer os.Unsetenv("LISTEN_PID")
	defer os.Unsetenv("LISTEN_FDS")
	defer os.Unsetenv("LISTEN_FDNAMES")
	if pid != strconv.Itoa(os.Getpid()) {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("systemd socket activation: LISTEN_FDS=%q is not a count", fds)
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	files := map[string]*os.File{}
	const first = 3 // SD_LISTEN_FDS_START
	for i := range n {
		fd := first + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "systemd-"+strconv.Itoa(fd))
		if i < len(names) && names[i] != "" {
			files["name:"+names[i]] = f
		}
		if sa, err := syscall.Getsockname(fd); err == nil {
			if p := port(sa); p != "" {
				files["port:"+p] = f
			}
		}
	}
	return files, nil
}

func (u *Upgrader) systemdFile(name, addr string) *os.File {
	if u.systemd == nil {
		return nil
	}
	if f, ok := u.systemd["name:"+name]; ok {
		return f
	}
	if _, p, err := net.SplitHostPort(addr); err == nil {
		if f, ok := u.systemd["port:"+p]; ok {
			return f
		}
	}
	return nil
}

func port(sa syscall.Sockaddr) string {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return strconv.Itoa(a.Port)
	case *syscall.SockaddrInet6:
		return strconv.Itoa(a.Port)
	}
	return ""
}
