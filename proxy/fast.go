package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// FastServer serves a Handler on HTTP/1.1 connections, plain or TLS, with a
// server loop of baton's own, and hands every connection whose next request
// it does not serve itself (and every HTTP/2 connection) to an ordinary
// http.Server.
//
// Why: with net/http's server in front of the Handler, a small proxied GET
// cost baton 44 µs of CPU against nginx's 18 µs (bench/RESULTS.md). Most of
// the difference is per-request machinery the proxy does not need: a
// goroutine started and stopped per request to notice a client hanging up,
// a request context, an http.Header map parsed from the request and a
// cloned one for the response, ReverseProxy's request clone, trace context
// and hop-by-hop canonicalisation. The fast path reads the request head
// into a buffer, checks it, and writes it to a pooled app connection with
// the forwarding headers appended; the answer's head is checked the same
// way and relayed with its body on the same goroutine.
//
// It serves only what it can serve exactly: HTTP/1.1 requests without a
// body or with a Content-Length body, with an origin-form target, valid
// header fields and a head that fits in its buffer, while no canary split
// is active. Everything else (chunked or upgrade requests, Expect,
// HTTP/1.0, bad input, and any request during a canary rollout) goes, with
// the rest of its connection, to Fallback: the server baton would use
// without the fast path, wrapped around the same Handler. So edge.Guard's
// limits, net/http's error answers, WebSockets and the canary's cookies keep
// working as they did, and the fast path only ever takes a request whose
// meaning net/http would agree with.
//
// What differs from Fallback, for a request the fast path serves:
//   - The request reaches the app as the client sent it: target and header
//     names are not re-encoded or canonicalised (as with nginx).
//   - A client that hangs up while the app is still working is noticed
//     once its request has waited watchAfter for the answer, not at once.
//   - No Content-Type is guessed for an answer without one, and no Date is
//     added to an answer without one.
type FastServer struct {
	// Router routes each request to its service's Handler, as it does on
	// Fallback: the same table, the same rules. Required.
	Router *Router
	// Fallback serves every connection the fast path hands over; its
	// Handler should be the same proxy behind the same edge wrappers. Its
	// ReadHeaderTimeout, IdleTimeout and ConnState also apply to the
	// connections the fast path serves. Required.
	Fallback *http.Server
	// Draining, if set, is asked before each answer; while it returns true
	// answers carry "Connection: close" and the connection is closed
	// after them, as the graceful package's wrapper does for Fallback.
	Draining func() bool
	// TLS makes Serve's listener an HTTPS one: each connection is
	// handshaken with Fallback.TLSConfig (within ReadHeaderTimeout, as
	// net/http does); one that negotiated HTTP/1.1 is served here, any
	// other (h2, acme-tls/1) goes to Fallback as it is. Requests handed
	// over from an HTTP/1.1 connection keep their Request.TLS.
	TLS bool

	tlsConfig                      *tls.Config
	readHeaderTimeout, idleTimeout time.Duration
	maxHead                        int // longest request head served here
	connState                      func(net.Conn, http.ConnState)
	handoff                        *handoffListener

	mu     sync.Mutex
	conns  map[*fastConn]struct{}
	closed bool

	// For tests and the curious: requests served on the fast path, and
	// connections handed to Fallback.
	servedFast, handedOff atomic.Uint64
}

// Serve accepts connections on ln until it is closed, serving each with
// the fast path, and runs Fallback on the connections handed over. It
// returns http.ErrServerClosed once ln is closed; Fallback keeps serving
// until it is shut down, and the fast path's connections until they end
// or Close is called.
func (s *FastServer) Serve(ln net.Listener) error {
	if s.Router == nil || s.Fallback == nil {
		return errors.New("proxy: FastServer needs a Router and a Fallback")
	}
	s.mu.Lock()
	s.readHeaderTimeout = s.Fallback.ReadHeaderTimeout
	s.idleTimeout = s.Fallback.IdleTimeout
	s.connState = s.Fallback.ConnState
	s.maxHead = maxFastHead
	if m := s.Fallback.MaxHeaderBytes; m > 0 && m < s.maxHead {
		s.maxHead = max(m, 4<<10) // net/http takes MaxHeaderBytes+4 KiB
	}
	s.handoff = &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	s.conns = map[*fastConn]struct{}{}
	if s.TLS {
		if s.Fallback.TLSConfig == nil {
			s.mu.Unlock()
			return errors.New("proxy: FastServer with TLS needs Fallback.TLSConfig")
		}
		// A copy: Fallback.Serve configures HTTP/2 on its own.
		s.tlsConfig = s.Fallback.TLSConfig.Clone()
		s.Fallback.ConnContext = withHandoffTLS(s.Fallback.ConnContext)
		s.Fallback.Handler = restoreTLS(s.Fallback.Handler)
	}
	s.mu.Unlock()
	go s.Fallback.Serve(s.handoff) // returns when Fallback is shut down

	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Out of file descriptors and the like: back off as
				// net/http does instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Close closes every connection the fast path is serving, busy or not.
// Call it after a drain's deadline has passed, with Fallback's Close.
func (s *FastServer) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*fastConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
	return nil
}

func (s *FastServer) newConn(nc net.Conn) *fastConn {
	if s.tlsConfig != nil {
		nc = tls.Server(nc, s.tlsConfig)
	}
	c := &fastConn{
		s:          s,
		nc:         nc,
		remoteAddr: nc.RemoteAddr().String(),
		logger:     s.Router.logger,
	}
	c.src = clientReader{c}
	c.br = bufio.NewReaderSize(c.src, 4<<10)
	if host, _, err := net.SplitHostPort(c.remoteAddr); err == nil {
		c.peer = host
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.conns[c] = struct{}{}
	c.setState(http.StateNew)
	return c
}

func (s *FastServer) forget(c *fastConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	s      *FastServer
	h      *Handler // the service of the request being served: see useHandler
	route  *Route
	logger *slog.Logger // for what is not one service's: the Router's
	nc     net.Conn
	src    io.Reader // what br reads: clientReader, after a grow with the old buffer first
	br     *bufio.Reader
	bw     *bufio.Writer

	tlsState    *tls.ConnectionState // nil on plain HTTP
	coveredHost []byte               // a Host the Router's Authority allowed on this TLS connection
	remoteAddr  string
	peer        string // host part of remoteAddr, as X-Real-Ip and X-Forwarded-For give it
	trustedPeer string // the peer, unmapped, if it is a trusted proxy

	rh      reqHead
	resp    respHead
	scratch []byte // a response head too large for the app connection's buffer

	// Watching for the client leaving while the app is slow: see watch.
	watchTimer *time.Timer
	watchUp    atomic.Pointer[upConn] // the app connection to abort
	watchDone  chan struct{}
	clientGone atomic.Bool
	hasByte    bool // the watch read a byte the client sent: byteBuf[0]
	byteBuf    [1]byte

	// Per request, captured before the head's bytes are discarded.
	method, path, host string
}

func (c *fastConn) setState(st http.ConnState) {
	if c.s.connState != nil {
		c.s.connState(c.nc, st)
	}
}

func (c *fastConn) serve() {
	handedOff := false
	defer func() {
		if err := recover(); err != nil {
			c.logger.Error("panic serving connection", "remote", c.remoteAddr, "panic", err, "stack", string(debug.Stack()))
		}
		if !handedOff {
			c.nc.Close()
			c.setState(http.StateClosed)
		}
		c.s.forget(c)
	}()
	if tc, ok := c.nc.(*tls.Conn); ok {
		proto, ok := c.handshake(tc)
		if !ok {
			return
		}
		if proto != "" && proto != "http/1.1" {
			// HTTP/2, or an ACME challenge: Fallback's, on the *tls.Conn
			// itself, with nothing read ahead.
			c.setState(http.StateHijacked)
			c.s.handedOff.Add(1)
			handedOff = c.s.handoff.give(tc)
			return
		}
	}
	wait := c.s.readHeaderTimeout
	for {
		if wait > 0 {
			c.nc.SetReadDeadline(time.Now().Add(wait))
		}
		if _, err := c.br.Peek(1); err != nil {
			return // gone, or idle for too long
		}
		c.takeWriter()
		c.setState(http.StateActive)
		headLen, err := c.readHead()
		if err == nil && c.misdirected() {
			// Closed after: the client needs a connection for that host.
			c.s.servedFast.Add(1)
			c.writeError(http.StatusMisdirectedRequest, msgMisdirected, true)
			return
		}
		if err == nil {
			err = c.routeRequest()
		}
		if err == nil && c.route != nil && !c.fast() {
			err = errNotFast
		}
		if err == errNotFast {
			handedOff = c.handOff()
			return
		}
		if err != nil {
			return
		}
		c.s.servedFast.Add(1)
		if c.route == nil {
			if !c.serveNoRoute(headLen) {
				return
			}
		} else if !c.serveRequest(headLen) {
			return
		}
		c.releaseWriter()
		c.setState(http.StateIdle)
		wait = c.s.idleTimeout
	}
}

// clientWriters holds the write buffers of client connections between
// their requests: a keep-alive connection waiting for its next request
// holds none, which is a good part of what an idle connection costs
// (bench/idle.sh).
var clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// takeWriter gives the connection a write buffer for the request it is
// about to serve.
func (c *fastConn) takeWriter() {
	if c.bw == nil {
		c.bw = clientWriters.Get().(*bufio.Writer)
		c.bw.Reset(c.nc)
	}
}

// releaseWriter gives the write buffer back while the connection waits
// for its next request; everything written was flushed by then (a
// response ends with a flush), and one that still holds bytes is kept.
func (c *fastConn) releaseWriter() {
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.bw.Reset(nil)
		clientWriters.Put(c.bw)
		c.bw = nil
	}
}

// handshake runs the TLS handshake within ReadHeaderTimeout and returns
// the negotiated protocol, or false if the handshake failed (logged at
// debug level: on a public port that is scanners and old clients).
func (c *fastConn) handshake(tc *tls.Conn) (string, bool) {
	if d := c.s.readHeaderTimeout; d > 0 {
		tc.SetDeadline(time.Now().Add(d))
	}
	if err := tc.HandshakeContext(context.Background()); err != nil {
		c.logger.Debug("TLS handshake failed", "remote", c.remoteAddr, "err", err)
		return "", false
	}
	if c.s.readHeaderTimeout > 0 {
		tc.SetDeadline(time.Time{})
	}
	st := tc.ConnectionState()
	c.tlsState = &st
	return st.NegotiatedProtocol, true
}

// maxFastHead is the longest request head the fast path reads (a request
// with a lot of cookies); longer ones go to net/http. A connection's buffer
// starts at 4 KiB and grows to this only when a head needs it.
const maxFastHead = 16 << 10

// growReader replaces the connection's 4 KiB reader with one of maxHead
// bytes that starts with what buffered holds.
func (c *fastConn) growReader(buffered []byte) {
	saved := bytes.Clone(buffered)
	c.src = io.MultiReader(bytes.NewReader(saved), c.src)
	c.br = bufio.NewReaderSize(c.src, c.s.maxHead)
}

// readHead waits until the buffer holds a complete request head and parses
// it into c.rh. It returns errNotFast for a head the fast path leaves to
// net/http, and the head's length otherwise.
func (c *fastConn) readHead() (int, error) {
	extended := false
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if n, bareLF := endOfHead(buf); n >= 0 {
			if bareLF {
				return 0, errNotFast
			}
			return n, parseRequest(buf[:n], &c.rh)
		}
		if !maybeHTTP1(buf) {
			// An HTTP/0.9 line ("GET /"), or no HTTP at all: no blank
			// line is coming, so net/http answers it now (400, or 505)
			// instead of the read-header timeout ending it.
			return 0, errNotFast
		}
		if len(buf) == c.br.Size() {
			if c.br.Size() >= c.s.maxHead {
				return 0, errNotFast // net/http reads larger heads, up to MaxHeaderBytes
			}
			c.growReader(buf)
			continue
		}
		if !extended && c.s.readHeaderTimeout > 0 {
			// The head has started: from now on it has ReadHeaderTimeout,
			// as with net/http.
			c.nc.SetReadDeadline(time.Now().Add(c.s.readHeaderTimeout))
			extended = true
		}
		if _, err := c.br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

// misdirected reports whether the parsed request must be answered 421, by
// the Router's rule (Router.isMisdirected). A connection's SNI name never
// changes, so the Host last found covered is remembered and the rule is
// asked again only when a request names another one.
func (c *fastConn) misdirected() bool {
	if c.tlsState == nil || (c.coveredHost != nil && bytes.Equal(c.rh.host, c.coveredHost)) {
		return false
	}
	if c.s.Router.isMisdirected(c.tlsState, string(c.rh.host), c.remoteAddr) {
		return true
	}
	c.coveredHost = append(c.coveredHost[:0], c.rh.host...)
	return false
}

// routeRequest looks the parsed request up in the Router's table, as
// Router.ServeHTTP does, and makes its route's Handler the one that serves
// it (c.route is nil when no route claims it). A path that routing would
// have to resolve first (dot segments, escapes) goes to Fallback, where
// Router.ServeHTTP resolves it, when the table routes by path at all.
func (c *fastConn) routeRequest() error {
	t := c.s.Router.table.Load()
	p := targetPath(c.rh.target)
	if t != nil && t.byPath && (needsCleaning(p) || bytes.IndexByte(p, '%') >= 0) {
		return errNotFast
	}
	c.route = t.LookupBytes(c.rh.host, p)
	if c.route != nil {
		c.useHandler(c.route.Handler)
	}
	return nil
}

// useHandler makes h the Handler of the request being served. Whether the
// peer is a trusted proxy is h's to say; it is worked out again only when
// the connection's requests move to another service.
func (c *fastConn) useHandler(h *Handler) {
	if c.h == h {
		return
	}
	c.h = h
	c.trustedPeer = h.trusted.trustedPeer(c.peer)
}

// serveNoRoute answers 404 to a request no route claims, as Router does.
func (c *fastConn) serveNoRoute(headLen int) bool {
	start := time.Now()
	c.method = methodString(c.rh.method)
	c.path = requestPath(c.rh.target)
	if c.rh.contentLength > 0 {
		if int64(c.br.Buffered()-headLen) < c.rh.contentLength {
			// A body still on its way: answer, then close rather than read it.
			c.br.Discard(headLen)
			c.writeError(http.StatusNotFound, msgNoRoute, true)
			c.s.Router.notFound(c.requestInfo(), time.Since(start))
			return false
		}
	}
	c.br.Discard(headLen + int(c.rh.contentLength))
	keep := c.writeError(http.StatusNotFound, msgNoRoute, false)
	c.s.Router.notFound(c.requestInfo(), time.Since(start))
	return keep
}

// requestInfo describes the request being served to observers and logs.
// c.host is the request's Host, kept from one request to the next of the
// connection so that it is not copied (allocated) again for each.
func (c *fastConn) requestInfo() RequestInfo {
	if string(c.rh.host) != c.host {
		c.host = string(c.rh.host)
	}
	return RequestInfo{Method: c.method, Host: c.host, Path: c.path, Proto: "HTTP/1.1", RemoteAddr: c.remoteAddr}
}

// targetPath returns the path of an origin-form target: up to the query.
func targetPath(target []byte) []byte {
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		return target[:i]
	}
	return target
}

// fast reports whether the parsed request is the fast path's to serve.
func (c *fastConn) fast() bool {
	h := c.h
	if h.split.Load() != nil || h.live.Load() == nil {
		return false // the canary's cookies and the 503 are Fallback's
	}
	return true
}

// handOff gives the connection, with what was read ahead of it, to
// Fallback. It reports whether Fallback took it.
func (c *fastConn) handOff() bool {
	c.setState(http.StateHijacked) // Fallback reports it afresh, as its own
	hc := &handoffConn{Conn: c.nc, tls: c.tlsState}
	hc.s = screen{src: &readAhead{br: c.br, rest: c.src}, limit: screenLimit(c.s.Fallback.MaxHeaderBytes)}
	if c.s.readHeaderTimeout > 0 {
		c.nc.SetReadDeadline(time.Time{}) // Fallback sets its own
	}
	c.s.handedOff.Add(1)
	return c.s.handoff.give(hc)
}

// serveRequest proxies the request in c.rh, whose head is the first
// headLen buffered bytes, and reports whether the connection stays open.
func (c *fastConn) serveRequest(headLen int) bool {
	h := c.h
	rh := &c.rh
	c.method = methodString(rh.method)
	c.path = requestPath(rh.target)
	if code, msg := h.refuse(c.method); code != 0 {
		return c.writeError(code, msg, !c.skipRequest(headLen, int64(c.br.Buffered()-headLen) >= rh.contentLength))
	}
	if h.bodyTooLarge(rh.contentLength) {
		c.br.Discard(headLen) // and close rather than read the body
		return c.writeError(http.StatusRequestEntityTooLarge, h.tooLarge, true)
	}
	u := h.acquire()
	if u == nil {
		// Route never goes back to nil, and fast() saw an upstream.
		c.br.Discard(headLen)
		return c.writeError(http.StatusServiceUnavailable, msgNotRouted, true)
	}
	start := time.Now()
	status, keep := c.forward(&u, headLen, start)
	u.release()
	if h.observer != nil {
		h.observer.RequestDone(u, c.requestInfo(), status, time.Since(start))
	}
	return keep
}

// forward sends the request to *u (or, if no app could be reached there, to
// whichever upstream is live by then, updating *u and its in-flight count)
// and relays the answer. It returns the status sent to the client (0 if
// none) and whether the client connection stays open.
func (c *fastConn) forward(u **Upstream, headLen int, start time.Time) (status int, keep bool) {
	h, rh := c.h, &c.rh
	cl := rh.contentLength
	// A body already in the buffer is sent with the head and consumed only
	// once the answer is in, so that a retry can send it again. A longer
	// one streams from its own goroutine once the head is out.
	inline := cl == 0 || int64(c.br.Buffered()-headLen) >= cl
	replay := replayable(c.method, cl > 0, c.hasIdempotencyKey())
	var (
		retry    = dialRetry{h: h}
		fresh    bool // the next attempt dials
		bodyDone chan error
	)
	for {
		uc, err := c.upstreamConn(*u, fresh)
		if err != nil {
			// The fast path has no signal of a client gone while it
			// waits (nil); at worst it writes its 502 to a closed socket.
			next, ok := retry.next(*u, err, nil)
			if !ok {
				return c.upstreamFailed(*u, err, c.skipRequest(headLen, inline))
			}
			if next != *u {
				// Another app is live now: go there, and stop counting on
				// this one, so that its drain does not wait for us.
				(*u).inFlight.Add(-1)
				*u = next
				fresh = false
			}
			continue
		}

		c.writeRequestHead(uc.bw)
		if inline && cl > 0 {
			body, _ := c.br.Peek(headLen + int(cl))
			uc.bw.Write(body[headLen:])
		}
		if err := uc.bw.Flush(); err != nil {
			uc.nc.Close()
			if uc.reused {
				fresh = true // the app closed it under us; nothing it could act on arrived
				continue
			}
			return c.upstreamFailed(*u, err, c.skipRequest(headLen, inline))
		}
		if !inline {
			// From here on the request cannot be sent again.
			c.br.Discard(headLen)
			if c.s.readHeaderTimeout > 0 || c.s.idleTimeout > 0 {
				c.nc.SetReadDeadline(time.Time{}) // a body may take its time, as with net/http
			}
			bodyDone = make(chan error, 1)
			go c.streamBody(uc, cl, bodyDone)
		}

		if d := h.respTimeout; d > 0 {
			uc.nc.SetReadDeadline(start.Add(d))
		}
		// Nothing more to read from the client for now (unless it
		// pipelined): watch it while the app is slow.
		watched := bodyDone == nil && c.br.Buffered() == headLen+int(cl)
		if watched {
			c.armWatch(uc)
		}
		var inBuf int
		inBuf, err = c.readResponseHead(uc)
		if watched && c.disarmWatch() {
			// The client left: nobody is left to answer, and the app's
			// connection has been cut so that the app stops too.
			uc.nc.Close()
			h.failure(*u, context.Canceled, c.requestInfo(), true)
			c.br.Discard(headLen + int(cl))
			return 0, false
		}
		if err != nil {
			if bodyDone == nil && uc.reused && replay && uc.br.Buffered() == 0 && isConnClosed(err) {
				// No answer byte on a pooled connection the app closed
				// just as the request arrived: http.Transport's rule is
				// that an idempotent request without a body may go again.
				uc.nc.Close()
				fresh = true
				continue
			}
			uc.nc.Close()
			bodyOK := true
			if bodyDone != nil {
				if berr := c.waitBody(bodyDone, uc); berr != nil {
					bodyOK = false
					if errors.As(berr, new(bodyError)) {
						err = berr // the cause; the read error was provoked by it
					}
				}
			} else {
				bodyOK = c.skipRequest(headLen, inline)
			}
			return c.upstreamFailed(*u, c.timeoutError(err), bodyOK)
		}
		if inline {
			c.br.Discard(headLen + int(cl))
		}
		return c.relay(*u, uc, inBuf, bodyDone)
	}
}

// timeoutError names Options.UpstreamTimeout as the cause of a read that
// timed out waiting for the answer's head.
func (c *fastConn) timeoutError(err error) error {
	var ne net.Error
	if d := c.h.respTimeout; d > 0 && errors.As(err, &ne) && ne.Timeout() {
		return upstreamTimeoutError{d}
	}
	return err
}

// skipRequest consumes a request that was not delivered, and reports
// whether the connection can go on: not if the body was never read.
func (c *fastConn) skipRequest(headLen int, inline bool) bool {
	if !inline {
		c.br.Discard(headLen)
		return false
	}
	c.br.Discard(headLen + int(c.rh.contentLength))
	return true
}

// watchAfter is how long a request waits for the app's answer before the
// fast path starts watching its client for hanging up, as net/http's
// server does from the start with a goroutine per request. Costing only a
// timer reset per request, it lets a client that gave up on a slow answer
// (a long poll, a timeout in the browser) cancel the app's work and stop
// counting in flight, so that a drain does not wait for it.
const watchAfter = 250 * time.Millisecond

// armWatch starts the watch timer for a request waiting on uc.
func (c *fastConn) armWatch(uc *upConn) {
	c.watchUp.Store(uc)
	if c.watchTimer == nil {
		c.watchDone = make(chan struct{}, 1)
		c.watchTimer = time.AfterFunc(watchAfter, c.watch)
		return
	}
	c.watchTimer.Reset(watchAfter)
}

// watch runs once the timer fires: it blocks reading the client. EOF or an
// error means the client is gone, and the app's connection is aborted; a
// byte means the client sent more (a pipelined request), kept for the
// reader. disarmWatch ends the read with a past deadline.
func (c *fastConn) watch() {
	defer func() { c.watchDone <- struct{}{} }()
	n, err := c.nc.Read(c.byteBuf[:])
	if n == 1 {
		c.hasByte = true
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return // disarmed: the answer came
	}
	c.clientGone.Store(true)
	if uc := c.watchUp.Load(); uc != nil {
		uc.nc.SetReadDeadline(aLongTimeAgo)
	}
}

// disarmWatch stops the watch and reports whether the client went away.
func (c *fastConn) disarmWatch() bool {
	if !c.watchTimer.Stop() {
		// It fired: end its read, wait for it, and undo the deadline.
		c.nc.SetReadDeadline(aLongTimeAgo)
		<-c.watchDone
		c.nc.SetReadDeadline(time.Time{})
	}
	c.watchUp.Store(nil)
	return c.clientGone.Load()
}

// clientReader reads the client connection for c.br, starting with the
// byte a watch read, if any.
type clientReader struct{ c *fastConn }

func (r clientReader) Read(p []byte) (int, error) {
	if c := r.c; c.hasByte && len(p) > 0 {
		c.hasByte = false
		p[0] = c.byteBuf[0]
		return 1, nil
	}
	return r.c.nc.Read(p)
}

// upstreamConn returns a pooled connection to u's app, or a new one.
func (c *fastConn) upstreamConn(u *Upstream, fresh bool) (*upConn, error) {
	if !fresh {
		if uc := u.transport.getIdle(); uc != nil {
			return uc, nil
		}
	}
	return u.transport.dial(context.Background())
}

// writeRequestHead buffers the request head for the app: the client's
// request line and fields minus the hop-by-hop ones, then the forwarding
// headers exactly as Handler.setForwarded sets them on the net/http path.
func (c *fastConn) writeRequestHead(bw *bufio.Writer) {
	rh := &c.rh
	bw.Write(rh.method)
	bw.WriteByte(' ')
	if r := c.route; r.StripPrefix && r.PathPrefix != "" {
		// The path was matched as it is (routeRequest), so the prefix
		// is its first bytes; StripPath's rule, on bytes.
		rest := rh.target[len(r.PathPrefix):]
		if len(rest) == 0 || rest[0] != '/' {
			bw.WriteByte('/')
		}
		bw.Write(rest)
	} else {
		bw.Write(rh.target)
	}
	bw.WriteString(" HTTP/1.1\r\n")
	var xfHost, xfProto []byte
	for i := 0; i < rh.n; i++ {
		f := &rh.fields[i]
		switch f.kind {
		case fOther:
			if dropsRequestField(c.h.underscores, f.name) {
				continue
			}
			fallthrough
		case fHost, fContentLength:
			bw.Write(f.name)
			bw.WriteString(": ")
			bw.Write(f.value)
			bw.WriteString("\r\n")
		case fXFHost:
			if xfHost == nil {
				xfHost = f.value
			}
		case fXFProto:
			if xfProto == nil {
				xfProto = f.value
			}
		}
	}
	bw.WriteString("X-Forwarded-For: ")
	for i := 0; i < rh.n; i++ {
		if f := &rh.fields[i]; f.kind == fXFF {
			bw.Write(f.value)
			bw.WriteString(", ")
		}
	}
	bw.WriteString(c.peer)
	bw.WriteString("\r\nX-Forwarded-Host: ")
	if c.trustedPeer != "" && len(xfHost) > 0 {
		bw.Write(xfHost)
	} else {
		bw.Write(rh.host)
	}
	bw.WriteString("\r\nX-Forwarded-Proto: ")
	switch {
	case c.trustedPeer != "" && len(xfProto) > 0:
		bw.Write(xfProto)
	case c.tlsState != nil:
		bw.WriteString("https")
	default:
		bw.WriteString("http")
	}
	bw.WriteString("\r\nX-Real-Ip: ")
	if c.trustedPeer != "" {
		bw.WriteString(c.realIP())
	} else {
		bw.WriteString(c.peer)
	}
	bw.WriteString("\r\n\r\n")
}

// realIP is clientIP for a trusted peer: the client it forwarded for.
func (c *fastConn) realIP() string {
	var xff []string
	for i := 0; i < c.rh.n; i++ {
		if f := &c.rh.fields[i]; f.kind == fXFF {
			xff = append(xff, string(f.value))
		}
	}
	return forwardedClient(xff, c.h.trusted, c.trustedPeer)
}

// streamBody copies a request body of n bytes from the client to the app
// and reports the result on done. Like the transport's writeBody, it wakes
// the answer's reader up if the client's side broke off, since the app
// would then wait forever for the rest.
func (c *fastConn) streamBody(uc *upConn, n int64, done chan<- error) {
	bufp := copyBufs.Get().(*[copyBufSize]byte)
	err := copyN(uc.bw, c.br, n, bufp[:], nil)
	copyBufs.Put(bufp)
	if err == nil {
		err = uc.bw.Flush()
	} else if _, werr := uc.bw.Write(nil); werr == nil {
		err = bodyError{err} // the client's side failed, not the app's
		uc.nc.SetReadDeadline(aLongTimeAgo)
	}
	done <- err
}

// waitBody waits for the request body's copy to end, after the answer is
// in (or failed), and reports whether the body was copied whole. An app
// that answered without reading all of it gets 50 ms, as with
// http.Transport; then its connection is closed, which ends the copy.
func (c *fastConn) waitBody(done chan error, uc *upConn) error {
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	uc.nc.Close()
	c.nc.SetReadDeadline(aLongTimeAgo) // a client that stopped sending
	<-done
	return errors.New("proxy: the app answered before reading the whole request body")
}

// readResponseHead reads and parses the app's answer head into c.resp. It
// returns how many bytes of uc's buffer the head occupies (to discard once
// it is relayed), or 0 if it was copied into c.scratch.
func (c *fastConn) readResponseHead(uc *upConn) (int, error) {
	uc.limitHead()
	defer uc.endHead()
	br := uc.br
	if _, err := br.Peek(1); err != nil {
		return 0, err
	}
	for {
		buf, _ := br.Peek(br.Buffered())
		if n, bareLF := endOfHead(buf); n >= 0 {
			if bareLF {
				return 0, errBadResponse{"lines end in a bare LF"}
			}
			return n, parseResponse(buf[:n], &c.resp)
		}
		if len(buf) == br.Size() {
			return 0, c.readLargeResponseHead(br)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return 0, err
		}
	}
}

func (c *fastConn) readLargeResponseHead(br *bufio.Reader) error {
	c.scratch = c.scratch[:0]
	for {
		line, err := br.ReadSlice('\n')
		c.scratch = append(c.scratch, line...)
		if err != nil && err != bufio.ErrBufferFull {
			return err // errHeadTooLarge past maxResponseHead: see limitHead
		}
		if n, bareLF := endOfHead(c.scratch); n >= 0 {
			if bareLF || n != len(c.scratch) {
				return errBadResponse{"lines end in a bare LF"}
			}
			return parseResponse(c.scratch, &c.resp)
		}
	}
}

// relay writes the answer in c.resp (whose head is the first inBuf bytes
// of uc's buffer, or c.scratch) and its body to the client, and returns the
// status and whether the client connection stays open. uc goes back to the
// pool if the exchange ended cleanly and the app keeps it alive.
func (c *fastConn) relay(u *Upstream, uc *upConn, inBuf int, bodyDone chan error) (int, bool) {
	for n := 0; c.resp.status < 200; n++ {
		// 1xx (103 Early Hints, an unasked-for 100): passed on, as
		// ReverseProxy does, before the final answer.
		if c.resp.status == http.StatusSwitchingProtocols || n == max1xx {
			uc.nc.Close()
			ok := bodyDone == nil || c.waitBody(bodyDone, uc) == nil
			return c.upstreamFailed(u, errBadResponse{fmt.Sprintf("unexpected status %d", c.resp.status)}, ok)
		}
		c.writeResponseHead(false)
		uc.br.Discard(inBuf)
		if err := c.bw.Flush(); err != nil {
			uc.nc.Close()
			if bodyDone != nil {
				c.waitBody(bodyDone, uc)
			}
			return 0, false
		}
		var err error
		if inBuf, err = c.readResponseHead(uc); err != nil {
			uc.nc.Close()
			ok := bodyDone == nil || c.waitBody(bodyDone, uc) == nil
			return c.upstreamFailed(u, c.timeoutError(err), ok)
		}
	}
	if c.h.respTimeout > 0 {
		uc.nc.SetReadDeadline(time.Time{}) // the bound is on the final answer's head only
	}
	resp := &c.resp
	status := resp.status
	bodyless := resp.bodyless(string(c.rh.method) == http.MethodHead)
	toEOF := !bodyless && !resp.chunked && resp.contentLength < 0
	closeClient := c.rh.close || toEOF || (c.s.Draining != nil && c.s.Draining())
	c.writeResponseHead(closeClient)
	uc.br.Discard(inBuf)

	var err error
	ended := false // EndStreams ended the answer: the app's connection goes
	switch {
	case bodyless:
	case resp.chunked:
		bufp := copyBufs.Get().(*[copyBufSize]byte)
		src, st := c.endableBody(u, uc)
		err = copyChunked(c.bw, src, bufp[:], c.bw.Flush)
		copyBufs.Put(bufp)
		if st != nil {
			ended = st.ended.Load()
			st.finish()
		}
	case resp.contentLength >= 0:
		bufp := copyBufs.Get().(*[copyBufSize]byte)
		err = copyN(c.bw, uc.br, resp.contentLength, bufp[:], c.bw.Flush)
		copyBufs.Put(bufp)
	default:
		err = c.copyToEOF(uc)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	upKeep := err == nil && !resp.close && !toEOF && !ended
	bodyOK := true
	if bodyDone != nil {
		if bodyOK = c.waitBody(bodyDone, uc) == nil; !bodyOK {
			upKeep = false
		}
	}
	if err != nil {
		if _, werr := c.bw.Write(nil); werr == nil {
			// The app broke off mid-answer; the client can only learn it
			// from the connection closing (ReverseProxy does the same).
			c.h.logger.Warn("upstream answer broke off", "addr", uc.t.addr, "method", c.method, "path", c.path, "err", err)
		}
	}
	if upKeep {
		uc.t.put(uc)
	} else {
		uc.nc.Close()
	}
	return status, err == nil && bodyOK && !closeClient
}

// copyToEOF relays a body that ends when the app closes the connection.
func (c *fastConn) copyToEOF(uc *upConn) error {
	bufp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bufp)
	if b := uc.br.Buffered(); b > 0 {
		p, _ := uc.br.Peek(b)
		if _, err := c.bw.Write(p); err != nil {
			return err
		}
		uc.br.Discard(b)
	}
	if err := c.bw.Flush(); err != nil {
		return err
	}
	_, err := io.CopyBuffer(c.nc, uc.nc, bufp[:])
	return err
}

// writeResponseHead buffers c.resp's head for the client.
func (c *fastConn) writeResponseHead(closeClient bool) {
	bw, resp := c.bw, &c.resp
	bw.WriteString("HTTP/1.1 ")
	bw.Write(resp.statusText)
	bw.WriteString("\r\n")
	for i := range resp.fields {
		if f := &resp.fields[i]; resp.forwardField(f) {
			bw.Write(f.name)
			bw.WriteString(": ")
			bw.Write(f.value)
			bw.WriteString("\r\n")
		}
	}
	if closeClient {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// upstreamFailed answers a failed exchange with u as the policy says
// (Handler.failure), and returns the status sent (0 if none) and whether
// the connection stays open. bodyOK tells whether the client's request was
// read whole; if not, the connection closes after the answer.
func (c *fastConn) upstreamFailed(u *Upstream, err error, bodyOK bool) (int, bool) {
	code, msg := c.h.failure(u, err, c.requestInfo(), false)
	if code == 0 {
		return 0, false
	}
	return code, c.writeError(code, msg, !bodyOK)
}

// writeError answers with a plain-text error, as http.Error does, and
// reports whether the connection stays open.
func (c *fastConn) writeError(code int, msg string, closeConn bool) bool {
	closeConn = closeConn || c.rh.close || (c.s.Draining != nil && c.s.Draining())
	bw := c.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(fmt.Sprintf("%d %s", code, http.StatusText(code)))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nDate: ")
	bw.Write(time.Now().UTC().AppendFormat(bw.AvailableBuffer(), http.TimeFormat))
	fmt.Fprintf(bw, "\r\nContent-Length: %d\r\n", len(msg)+1)
	if closeConn {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	bw.WriteString(msg)
	bw.WriteString("\n")
	return bw.Flush() == nil && !closeConn
}

// methodString returns m as a string, without allocating for the common
// methods.
func methodString(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "OPTIONS":
		return "OPTIONS"
	}
	return string(m)
}

// requestPath returns the target's path, decoded as URL.Path would be.
func requestPath(target []byte) string {
	p := target
	for i, b := range target {
		if b == '?' {
			p = target[:i]
			break
		}
	}
	s := string(p)
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			if d, err := url.PathUnescape(s); err == nil {
				return d
			}
			break
		}
	}
	return s
}

// hasIdempotencyKey reports whether the request carries Idempotency-Key or
// X-Idempotency-Key, which makes it replayable as in the transport's rule.
func (c *fastConn) hasIdempotencyKey() bool {
	for i := 0; i < c.rh.n; i++ {
		for _, k := range idempotencyKeysLower {
			if equalFold(c.rh.fields[i].name, k) {
				return true
			}
		}
	}
	return false
}

// handoffListener is the listener Fallback serves: it yields the
// connections the fast path hands over.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// give hands c to Fallback, or closes it if Fallback has shut down.
func (l *handoffListener) give(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// handoffConn is a connection handed to Fallback: reads start with what the
// fast path had read ahead, and are screened (screen.go).
type handoffConn struct {
	net.Conn
	s   screen               // reads a readAhead
	tls *tls.ConnectionState // of the TLS connection under it, if any
}

func (c *handoffConn) Read(p []byte) (int, error) { return c.s.Read(p) }

// readAhead reads what the fast path had buffered, then the connection.
type readAhead struct {
	br   *bufio.Reader // nil once drained
	rest io.Reader     // then fastConn.src: a byte a watch kept, then Conn
}

func (r *readAhead) Read(p []byte) (int, error) {
	if r.br != nil {
		if r.br.Buffered() > 0 {
			return r.br.Read(p)
		}
		r.br = nil
	}
	return r.rest.Read(p)
}

// CloseWrite lets net/http half-close the connection before closing it, as
// it does with a *net.TCPConn.
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// handoffTLSKey carries a handed-over connection's TLS state from
// Fallback's ConnContext to its requests.
type handoffTLSKey struct{}

// withHandoffTLS wraps a ConnContext hook (nil allowed) so that the
// context of a connection handed over from a TLS connection carries its
// TLS state: net/http only fills Request.TLS for a *tls.Conn.
func withHandoffTLS(next func(context.Context, net.Conn) context.Context) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if next != nil {
			ctx = next(ctx, c)
		}
		if hc, ok := c.(*handoffConn); ok && hc.tls != nil {
			ctx = context.WithValue(ctx, handoffTLSKey{}, hc.tls)
		}
		return ctx
	}
}

// restoreTLS sets Request.TLS from the context for requests on a handed-over
// TLS connection, so that the proxy says X-Forwarded-Proto: https for them.
func restoreTLS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(handoffTLSKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		next.ServeHTTP(w, r)
	})
}
