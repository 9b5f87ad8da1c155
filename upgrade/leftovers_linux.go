package upgrade

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// killLeftovers kills every process that still holds one of lns after a
// failed upgrade, other than this process and its ancestors, and returns
// what it killed.
//
// Why: tableflip kills the new process it started when the upgrade fails,
// but only that one PID. A new binary that is a wrapper (a "#!/bin/sh"
// script that starts baton, or anything, as a child instead of exec'ing it)
// leaves that child running with the inherited listening sockets: clients
// then queue on a socket nobody accepts from, and a later 'baton serve'
// cannot bind the port. Apps that baton launches never hold the sockets
// (Go opens every descriptor close-on-exec), so after a failed upgrade a
// holder is a leftover of it. The ancestors are spared: a previous baton
// still finishing its requests, and systemd, which keeps the sockets of
// socket activation, are ancestors of this process.
func killLeftovers(lns []net.Listener) []string {
	inodes := map[uint64]bool{}
	for _, ln := range lns {
		if ino, ok := socketInode(ln); ok {
			inodes[ino] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	spare := ancestors(os.Getpid())
	var killed []string
	for _, pid := range socketHolders(inodes) {
		if spare[pid] {
			continue
		}
		// The name is read first: once killed, the process may be reaped
		// and its /proc entry gone before the message is written.
		name := command(pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed = append(killed, fmt.Sprintf("pid %d (%s)", pid, name))
		}
	}
	return killed
}

// socketInode returns the inode of ln's socket, as /proc/PID/fd shows it
// ("socket:[INODE]").
func socketInode(ln net.Listener) (uint64, bool) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var st syscall.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return 0, false
	}
	return st.Ino, true
}

// socketHolders returns the processes with a descriptor of a socket whose
// inode is in inodes, among those whose descriptors this process may read.
func socketHolders(inodes map[uint64]bool) []int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var holders []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir("/proc/" + p.Name() + "/fd")
		if err != nil {
			continue // gone, or not ours to look into
		}
		for _, fd := range fds {
			link, err := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name())
			if err != nil {
				continue
			}
			s, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil && inodes[ino] {
				holders = append(holders, pid)
				break
			}
		}
	}
	return holders
}

// ancestors returns pid, its parent, its parent's parent, ... up to and
// including PID 1.
func ancestors(pid int) map[int]bool {
	seen := map[int]bool{1: true}
	for pid > 1 && !seen[pid] {
		seen[pid] = true
		pid = parentOf(pid)
	}
	return seen
}

// parentOf reads the parent PID from /proc/PID/stat; 0 if unknown.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// command returns pid's command name, for the message.
func command(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
