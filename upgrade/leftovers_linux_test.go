package upgrade

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killLeftovers kills a process that holds one of the listening sockets
// (a wrapper's child after a failed upgrade) and spares the rest: this
// process, whose socket keeps working, and a process that holds none.
func TestKillLeftoversKillsOnlyHolders(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "30")
	holder.ExtraFiles = []*os.File{f}
	bystander := exec.Command("sleep", "30")
	for _, c := range []*exec.Cmd{holder, bystander} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	f.Close()
	exited := make(chan error, 1)
	go func() { exited <- holder.Wait() }()

	killed := killLeftovers([]net.Listener{ln})
	if want := "pid " + strconv.Itoa(holder.Process.Pid) + " (sleep)"; len(killed) != 1 || killed[0] != want {
		t.Errorf("killed %q; want [%q]", killed, want)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the process holding the socket still runs")
	}
	if err := bystander.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process that holds no socket was killed: %v", err)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("this process's socket no longer accepts: %v", err)
	}
	c.Close()
	if a := ancestors(os.Getpid()); !a[os.Getpid()] || !a[os.Getppid()] || !a[1] {
		t.Errorf("ancestors %v lack this process, its parent or PID 1", a)
	}
	if !strings.Contains(command(os.Getpid()), "upgrade") {
		t.Errorf("command of this process = %q; want the test binary's name", command(os.Getpid()))
	}
}
