// Package graceful stops an http.Server without failing a client request.
//
// http.Server.Shutdown closes idle keep-alive connections at once. A client
// that is just then sending its next request on one of them sees a reset: the
// same failure the nginx reload recipe shows ~100 ms after each reload. This
// package drains more politely: it stops accepting, answers every further
// request with "Connection: close" so that busy clients leave on their own
// after a clean response, and only closes a connection that has sat idle for
// a while (a client that is not using it). Hijacked connections such as
// WebSockets are outside the server's view, so the caller passes a count of
// its own (the proxy's requests in flight) to wait for as well.
package graceful

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleClose is how long a connection must have been idle before a
// drain closes it.
const DefaultIdleClose = 500 * time.Millisecond

// Drainer tracks the connections of one or more http.Servers and drains
// them. Install it with Attach before serving. The zero value is not usable;
// create it with New. It is safe for concurrent use.
type Drainer struct {
	draining  atomic.Bool
	mu        sync.Mutex
	conns     map[net.Conn]time.Time // idle since; zero while active
	listeners []net.Listener
}

// New returns a Drainer.
func New() *Drainer { return &Drainer{conns: map[net.Conn]time.Time{}} }

// Attach makes d track srv's connections and wraps srv's handler so that
// responses carry "Connection: close" once draining. Call it before Serve.
func (d *Drainer) Attach(srv *http.Server) {
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		d.connState(c, s)
		if prev != nil {
			prev(c, s)
		}
	}
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			// net/http closes the connection after this response; HTTP/2
			// drops the header and relies on GOAWAY from Shutdown.
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// Listener wraps ln so that Drain can close it; pass the result to Serve.
func (d *Drainer) Listener(ln net.Listener) net.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listeners = append(d.listeners, ln)
	return ln
}

// Draining reports whether Drain has started. A Serve that returns an error
// while draining was stopped on purpose.
func (d *Drainer) Draining() bool { return d.draining.Load() }

func (d *Drainer) connState(c net.Conn, s http.ConnState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch s {
	case http.StateNew, http.StateActive:
		d.conns[c] = time.Time{}
	case http.StateIdle:
		d.conns[c] = time.Now()
	case http.StateHijacked, http.StateClosed:
		delete(d.conns, c)
	}
}

func isHTTP2(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// Open returns how many connections are open (not hijacked).
func (d *Drainer) Open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// Drain stops accepting new connections and waits until every tracked
// connection has closed and busy() (if not nil) returns 0, closing
// connections that stay idle for idleClose. It returns ctx's error if the
// deadline passes first; the caller then calls Shutdown or Close.
func (d *Drainer) Drain(ctx context.Context, idleClose time.Duration, busy func() int64) error {
	if idleClose <= 0 {
		idleClose = DefaultIdleClose
	}
	d.draining.Store(true)
	d.mu.Lock()
	var errs []error
	for _, ln := range d.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	d.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		now := time.Now()
		d.mu.Lock()
		open := 0
		for c, since := range d.conns {
			idle := !since.IsZero()
			if idle && isHTTP2(c) {
				// An idle HTTP/2 connection is ended by Shutdown with a
				// GOAWAY, which tells the client not to send on it.
				continue
			}
			if idle && now.Sub(since) >= idleClose {
				c.Close()
				delete(d.conns, c)
				continue
			}
			open++
		}
		d.mu.Unlock()
		if open == 0 && (busy == nil || busy() == 0) {
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
