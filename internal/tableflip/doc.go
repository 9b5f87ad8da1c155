// Package tableflip is a copy of github.com/cloudflare/tableflip v1.2.3
// (BSD 3-clause, see LICENSE) with one change: the new process is started
// in a process group of its own, and a new process that fails (it times
// out, exits, or the upgrader stops) is killed with its whole group.
//
// Why a copy: tableflip starts the new process itself, with no way to set
// its process attributes, and on timeout kills only that one PID. When the
// new binary is a wrapper (a "#!/bin/sh" script that starts baton, or
// anything else, as a child instead of exec'ing it), the children survive
// the kill and keep the inherited listening sockets: clients hang on a
// socket nobody accepts from, and a later 'baton serve' cannot bind the
// port (issue 13, item 13). The wire protocol between parent and child is
// unchanged, so a baton built with upstream tableflip upgrades to one built
// with this copy and back.
//
// A consequence of the own group: after an upgrade from a shell, Ctrl-C in
// that terminal no longer reaches the new process (it is not in the
// terminal's foreground group); under systemd nothing changes, as systemd
// signals the whole cgroup.
//
// Upstream's model, unchanged: an upgrade spawns a new copy of argv[0] and
// passes file descriptors of used listening sockets to the new process. The
// old process exits once the new process signals readiness. At any point in
// time there are one or two processes, with at most one of them in
// non-ready state.
package tableflip
