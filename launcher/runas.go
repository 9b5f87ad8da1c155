package launcher

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// RunAs is the user and group an instance runs as, instead of baton's own.
// Resolve one with LookupRunAs. The zero value is not valid; a nil *RunAs
// means "as baton's user".
type RunAs struct {
	Name   string   // user name, for messages and $USER
	UID    uint32   // user ID
	GID    uint32   // primary group ID: the group that may read releases and logs
	Groups []uint32 // supplementary group IDs
	Home   string   // home directory, for $HOME
}

// LookupRunAs resolves name, a user name or a numeric user ID, with the
// system's user database.
func LookupRunAs(name string) (*RunAs, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("run user: empty name")
	}
	lookup := user.Lookup
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		lookup = user.LookupId
	}
	u, err := lookup(name)
	if err != nil {
		return nil, fmt.Errorf("run user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("run user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("run user %q: gid %q: %w", name, u.Gid, err)
	}
	r := &RunAs{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("run user %q: groups: %w", name, err)
	}
	for _, id := range ids {
		g, err := strconv.ParseUint(id, 10, 32)
		if err == nil && uint32(g) != r.GID {
			r.Groups = append(r.Groups, uint32(g))
		}
	}
	return r, nil
}

// String returns "name (uid U, gid G)".
func (r *RunAs) String() string {
	return fmt.Sprintf("%s (uid %d, gid %d)", r.Name, r.UID, r.GID)
}

// credential is what the child process switches to before it runs the app.
func (r *RunAs) credential() *syscall.Credential {
	return &syscall.Credential{Uid: r.UID, Gid: r.GID, Groups: r.Groups}
}

// env returns the variables that name the user to the app, in place of
// baton's own.
func (r *RunAs) env() []string {
	return []string{"USER=" + r.Name, "LOGNAME=" + r.Name, "HOME=" + r.Home}
}

// dropCapsArgv returns the argv prefix that makes an app start without any
// capability of baton's: baton run as an unprivileged user with ambient
// capabilities (systemd's AmbientCapabilities=) would otherwise pass them on
// to every app it starts, the ones that let it switch users included. When
// baton is root and the app runs as another user, the kernel clears them
// itself on the switch of user, and when baton has no ambient capability
// there is nothing to drop; then the prefix is empty.
func dropCapsArgv(runAs *RunAs) []string {
	if os.Geteuid() == 0 && runAs != nil && runAs.UID != 0 {
		return nil
	}
	if !hasAmbientCaps() {
		return nil
	}
	return []string{"setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"}
}

// hasAmbientCaps reports whether this process has an ambient capability.
func hasAmbientCaps() bool {
	f, err := os.Open(procRoot + "/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapAmb:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n != 0
		}
	}
	return false
}
