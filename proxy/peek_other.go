//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

import "net"

// peeker is a no-op where MSG_PEEK|MSG_DONTWAIT is not available: a pooled
// connection the app has closed is then found out by the request sent on it
// (and an idempotent request is retried on a fresh connection).
type peeker struct{}

func (p *peeker) init(net.Conn) {}
func (p *peeker) closed() bool  { return false }
