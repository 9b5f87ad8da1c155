package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Default transport settings. They are chosen for an app on the same host or
// LAN: dialing is cheap, so a short dial timeout turns a dead app into a fast
// retry instead of a hung request.
const (
	DefaultDialTimeout     = 3 * time.Second
	DefaultIdleConnTimeout = 60 * time.Second
	DefaultMaxIdlePerHost  = 512
)

// Upstream is one app address (blue or green) with its own connection pool
// and in-flight counter. Keeping a pool per upstream lets a drain close the old
// app's idle connections without touching the new app's.
//
// An Upstream is safe for concurrent use. Create it with NewUpstream.
type Upstream struct {
	name      string
	addr      string
	url       *url.URL
	transport *transport // HTTP/1.1, no TLS, never via $HTTP_PROXY, never asks for compression
	init      sync.Once
	proxy     *httputil.ReverseProxy // set by the first Handler.Route
	inFlight  atomic.Int64
	served    atomic.Uint64
	streams   streamSet // WebSockets and event streams open on u: see streamend.go
}

// NewUpstream returns an Upstream named name (used in logs and error bodies)
// that forwards to the HTTP server at addr ("host:port").
func NewUpstream(name, addr string) (*Upstream, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: address %q: %w", name, addr, err)
	}
	if host == "" || port == "" {
		return nil, fmt.Errorf("upstream %s: address %q: want host:port", name, addr)
	}
	u := &Upstream{
		name:      name,
		addr:      addr,
		url:       &url.URL{Scheme: "http", Host: addr},
		transport: newTransport(addr),
	}
	u.transport.streams = &u.streams
	return u, nil
}

// Name returns the upstream's name.
func (u *Upstream) Name() string { return u.name }

// Addr returns the upstream's host:port.
func (u *Upstream) Addr() string { return u.addr }

// InFlight returns the number of requests currently being proxied to u,
// counted from before the upstream round trip until the response body (or an
// upgraded connection) is finished.
func (u *Upstream) InFlight() int64 { return u.inFlight.Load() }

// Served returns the number of requests u has finished since it was created.
func (u *Upstream) Served() uint64 { return u.served.Load() }

// CloseIdleConnections closes u's idle keep-alive connections to the app. It
// does not interrupt requests in flight.
func (u *Upstream) CloseIdleConnections() { u.transport.CloseIdleConnections() }

// WaitIdle blocks until u has no request in flight or ctx is done. It returns
// ctx's error in the latter case. poll is how often the count is read.
func (u *Upstream) WaitIdle(ctx context.Context, poll time.Duration) error {
	if u.inFlight.Load() == 0 {
		return nil
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if u.inFlight.Load() == 0 {
				return nil
			}
		}
	}
}

// EndStreams ends the long-lived streams open on u, for a drain whose
// deadline has passed: each WebSocket gets a close frame 1001 "going away"
// (the app a masked one), each server-sent-events stream the end of its
// body, at the next frame or event boundary of what the app sends. It
// returns how many ended, once all have or ctx is done; a stream whose app
// is in the middle of a frame when ctx ends is left as it is. Other
// answers, downloads included, are never cut short. Streams that start on
// u later are not affected.
func (u *Upstream) EndStreams(ctx context.Context) int { return u.streams.end(ctx) }

func (u *Upstream) release() {
	u.inFlight.Add(-1)
	u.served.Add(1)
}
