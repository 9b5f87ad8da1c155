//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"net"
	"syscall"
)

// peeker asks the kernel, without blocking and without consuming anything,
// whether a pooled connection is still usable: a connection the app closed
// while it sat idle reads as EOF (or an error), one it wrote to unasked has
// data. Only "would block" means usable. One recvfrom(MSG_PEEK|MSG_DONTWAIT)
// per reuse, so that a request is not sent into a dead socket (a POST sent
// there fails with a 502 rather than being retried).
type peeker struct {
	raw  syscall.RawConn
	fn   func(fd uintptr) bool // built once: no allocation per check
	dead bool
	buf  [1]byte
}

func (p *peeker) init(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	p.raw = raw
	p.fn = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		p.dead = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		return true // never wait for readiness
	}
}

func (p *peeker) closed() bool {
	if p.raw == nil {
		return false
	}
	if err := p.raw.Read(p.fn); err != nil {
		return true
	}
	return p.dead
}
