package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// transport is baton's HTTP/1.1 client to one app: a pool of keep-alive
// connections and a RoundTrip that writes the request and reads the answer
// on the calling goroutine.
//
// Why not http.Transport: it is general (proxies, TLS, HTTP/2, many hosts)
// and pays for it on every request. Each round trip is handed to the
// connection's writeLoop goroutine over a channel and its answer handed back
// from the readLoop goroutine over another, inside a select, with a context
// of its own; through the proxy that cost 24 more allocations per request
// than this transport needs, and 30% more proxy CPU per request under 50
// concurrent clients on 2 cores (bench/RESULTS.md has the figures). Here a
// request without a body costs no goroutine and no channel: write, flush,
// read on the handler's goroutine. Only a request body is written from a
// goroutine of its own, so that an app that answers before reading all of
// it (a 413, a streaming echo) cannot deadlock the exchange.
//
// What it keeps from http.Transport, because the proxy's guarantees rest on
// it: a dial error is returned unwrapped as the *net.OpError with Op "dial"
// (retryTransport retries those on the live upstream); a request that failed
// on a reused keep-alive connection before any answer byte arrived is
// retried once on a fresh connection if that is safe (nothing of it was
// written, or it is an idempotent request without a body), and a pooled
// connection the app has already closed is noticed before it is used; a
// cancelled request context aborts the exchange; a 101 answer's Body is the
// connection itself, writable; 1xx answers reach httptrace's Got1xxResponse
// (ReverseProxy forwards them); trailers are read into Response.Trailer.
//
// What it leaves out: TLS, HTTP/2, proxies, compression (the proxy never
// asks for it), and "Expect: 100-continue", which it does not forward: the
// front server has already answered the client's 100-continue by the time
// the body is read, and nginx does the same.
type transport struct {
	addr        string
	dialer      net.Dialer
	idleTimeout time.Duration
	maxIdle     int
	streams     *streamSet // where WebSockets and event streams register; nil for none

	mu      sync.Mutex
	idle    []*upConn // most recently used last
	janitor *time.Timer
}

func newTransport(addr string) *transport {
	return &transport{
		addr:        addr,
		dialer:      net.Dialer{Timeout: DefaultDialTimeout, KeepAlive: 30 * time.Second},
		idleTimeout: DefaultIdleConnTimeout,
		maxIdle:     DefaultMaxIdlePerHost,
	}
}

// upConn is one connection to the app. It is used by one request at a time.
type upConn struct {
	t      *transport
	nc     net.Conn
	lim    headLimiter // what br reads
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool // carried a request before the current one

	abort func() // sets a past deadline: how a cancelled context stops I/O
	peek  peeker // tells whether the app closed c while it was idle

	// Per request.
	stop    func() bool // unregisters the context watcher
	written chan error  // result of the body writer, if the request has a body
}

// maxResponseHead bounds an answer head from the app on both front ends;
// a longer one is a 502. nginx's default is 4 or 8 KiB
// (proxy_buffer_size), net/http's client takes up to 1 MiB (and then some:
// one 100 MiB header field cost baton 400 MB of memory before the bound).
const maxResponseHead = 256 << 10

// errHeadTooLarge is an answer head over maxResponseHead.
var errHeadTooLarge = errBadResponse{fmt.Sprintf("head over %d KiB", maxResponseHead>>10)}

// headLimiter is what an upConn's reader reads: the connection, with a
// budget of bytes while an answer head is read, so that no app can make
// baton buffer an unbounded head. left < 0 means no budget (a body).
type headLimiter struct {
	nc   net.Conn
	left int64
}

func (l *headLimiter) Read(p []byte) (int, error) {
	if l.left < 0 {
		return l.nc.Read(p)
	}
	if l.left == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.nc.Read(p)
	l.left -= int64(n)
	return n, err
}

// limitHead starts the budget of an answer head: maxResponseHead, less
// what br holds already (the head's start). Both front ends call it
// before reading a head, and endHead once it is read.
func (c *upConn) limitHead() { c.lim.left = max(maxResponseHead-int64(c.br.Buffered()), 0) }

// endHead lifts the budget: what follows the head is a body.
func (c *upConn) endHead() { c.lim.left = -1 }

// aLongTimeAgo is a deadline in the past, to wake up a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// errServerClosedIdle marks a reused connection that the app closed while it
// sat in the pool; such a request never reached the app's handler.
var errServerClosedIdle = errors.New("proxy: app closed idle connection")

// retryableError is a failure on a reused connection after which the request
// may be sent again on a fresh one.
type retryableError struct{ err error }

func (e retryableError) Error() string { return e.err.Error() }
func (e retryableError) Unwrap() error { return e.err }

// RoundTrip implements http.RoundTripper for requests to t.addr.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	fresh := false
	for {
		var c *upConn
		var err error
		if !fresh {
			c = t.getIdle()
		}
		if c == nil {
			if c, err = t.dial(ctx); err != nil {
				closeRequestBody(req)
				return nil, err
			}
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		var re retryableError
		if c.reused && errors.As(err, &re) {
			// The app closed the connection under us (an idle timeout, a
			// restart); try once more on a connection of our own.
			fresh = true
			continue
		}
		closeRequestBody(req)
		return nil, err
	}
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// CloseIdleConnections closes the pooled connections. Connections in use are
// not touched; they are closed or pooled when their request ends.
func (t *transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	if t.janitor != nil {
		t.janitor.Stop()
		t.janitor = nil
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

func (t *transport) dial(ctx context.Context) (*upConn, error) {
	nc, err := t.dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err // a *net.OpError with Op "dial": see isDialError
	}
	c := &upConn{
		t:   t,
		nc:  nc,
		lim: headLimiter{nc: nc, left: -1},
		bw:  bufio.NewWriterSize(nc, 4<<10),
	}
	c.br = bufio.NewReaderSize(&c.lim, 4<<10)
	c.abort = func() { c.nc.SetDeadline(aLongTimeAgo) }
	c.peek.init(nc)
	return c, nil
}

// getIdle returns the most recently pooled connection that is still open, or
// nil. Using the newest keeps few connections warm and lets the rest expire.
func (t *transport) getIdle() *upConn {
	now := time.Now()
	for {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			return nil
		}
		c := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if now.Sub(c.idleAt) < t.idleTimeout && c.br.Buffered() == 0 && !c.peek.closed() {
			c.reused = true
			return c
		}
		c.nc.Close()
	}
}

// put returns c to the pool, or closes it if the pool is full.
func (t *transport) put(c *upConn) {
	c.idleAt = time.Now()
	c.stop, c.written = nil, nil
	t.mu.Lock()
	if len(t.idle) >= t.maxIdle {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	t.idle = append(t.idle, c)
	if t.janitor == nil {
		t.janitor = time.AfterFunc(t.idleTimeout, t.prune)
	}
	t.mu.Unlock()
}

// prune closes connections idle for longer than the idle timeout, so that a
// pool nobody uses does not keep sockets the app has long closed.
func (t *transport) prune() {
	now := time.Now()
	var expired []*upConn
	t.mu.Lock()
	k := 0
	for k < len(t.idle) && now.Sub(t.idle[k].idleAt) >= t.idleTimeout {
		k++
	}
	expired = append(expired, t.idle[:k]...)
	n := copy(t.idle, t.idle[k:])
	clear(t.idle[n:])
	t.idle = t.idle[:n]
	if n > 0 {
		t.janitor = time.AfterFunc(t.idleTimeout-now.Sub(t.idle[0].idleAt), t.prune)
	} else {
		t.janitor = nil
	}
	t.mu.Unlock()
	for _, c := range expired {
		c.nc.Close()
	}
}

// roundTrip sends req on c and reads the answer's head. On success c belongs
// to the returned response's Body until it is read to the end or closed; on
// failure c is closed.
func (c *upConn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	c.stop = context.AfterFunc(ctx, c.abort)

	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	if err := c.writeHead(req, body); err != nil {
		return nil, c.fail(ctx, err)
	}
	if err := c.bw.Flush(); err != nil {
		// Whatever part of the head reached the app is not a request it
		// can act on, and the body has not been touched.
		return nil, c.fail(ctx, retryableError{err})
	}
	if body != nil {
		c.written = make(chan error, 1)
		go c.writeBody(req, body)
	}

	resp, err := c.readResponse(req)
	if err != nil {
		if c.written != nil {
			// A body write error says more than the read error it causes.
			select {
			case werr := <-c.written:
				if werr != nil {
					err = werr
				}
			default:
			}
		}
		return nil, c.fail(ctx, err)
	}
	return resp, nil
}

// fail closes c after a failed exchange and returns the error to report:
// the context's if it was cancelled (the deadline error we provoked is an
// artefact of that).
func (c *upConn) fail(ctx context.Context, err error) error {
	c.stop()
	c.nc.Close()
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// skipRequestHeader reports whether writeHead writes header k itself (or
// drops it) rather than copying it. ReverseProxy has removed the hop-by-hop
// headers already.
func skipRequestHeader(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer", "Expect":
		return true
	}
	return false
}

// writeHead buffers req's request line and header, like Request.Write.
func (c *upConn) writeHead(req *http.Request, body io.Reader) error {
	bw := c.bw
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !validHeaderValue(host) {
		host = "" // as Request.Write: never send an altered Host
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	if err := writeRequestURI(bw, req, host); err != nil {
		return err
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}

	switch cl := req.ContentLength; {
	case body != nil && cl < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			bw.WriteString("Trailer: ")
			i := 0
			for k := range req.Trailer {
				if i > 0 {
					bw.WriteString(",")
				}
				bw.WriteString(k)
				i++
			}
			bw.WriteString("\r\n")
		}
	case cl > 0 || (cl == 0 && method != http.MethodGet && method != http.MethodHead):
		// Many servers expect a Content-Length on POST, PUT and the like
		// even when it is 0 (same rule as Request.Write).
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), max(cl, 0), 10))
		bw.WriteString("\r\n")
	}
	if req.Close {
		if v := req.Header["Connection"]; len(v) == 0 || !strings.Contains(strings.ToLower(strings.Join(v, ",")), "close") {
			bw.WriteString("Connection: close\r\n")
		}
	}
	for k, vv := range req.Header {
		if skipRequestHeader(k) || !validHeaderName(k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeRequestURI writes what URL.RequestURI returns without building it.
func writeRequestURI(bw *bufio.Writer, req *http.Request, host string) error {
	u := req.URL
	if req.Method == http.MethodConnect && u.Path == "" && u.Opaque == "" {
		bw.WriteString(host)
		return nil
	}
	var path, query string
	if u.Opaque != "" {
		path = u.RequestURI()
	} else {
		path = u.EscapedPath()
		if path == "" {
			path = "/"
		}
		query = u.RawQuery
	}
	if hasCTL(path) || hasCTL(query) {
		return errors.New("proxy: control character in request URL")
	}
	bw.WriteString(path)
	if u.Opaque == "" && (u.ForceQuery || query != "") {
		bw.WriteByte('?')
		bw.WriteString(query)
	}
	return nil
}

// writeField writes "k: v\r\n", with v cleaned as Header.Write cleans it:
// line breaks become spaces, surrounding blanks go.
func writeField(bw *bufio.Writer, k, v string) {
	if !validHeaderValue(v) {
		v = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, v)
	}
	v = textproto.TrimString(v)
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

// validHeaderValue reports whether v has no line break in it.
func validHeaderValue(v string) bool {
	return strings.IndexByte(v, '\n') < 0 && strings.IndexByte(v, '\r') < 0
}

// validHeaderName reports whether k is an RFC 7230 token; Header.Write drops
// fields whose name is not.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte[k[i]] {
			return false
		}
	}
	return true
}

var isTokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// writeBody copies the request body to the app and reports the result on
// c.written. It runs on its own goroutine while roundTrip reads the answer.
func (c *upConn) writeBody(req *http.Request, body io.Reader) {
	err := c.copyBody(req, body)
	var be bodyError
	if errors.As(err, &be) {
		// The client's body broke off (or was short): the app waits for
		// the rest and will never answer. Wake the reader up. After a
		// write error on the app's side, by contrast, the reader goes on:
		// an app that answered early and closed has its answer there.
		c.nc.SetReadDeadline(aLongTimeAgo)
	}
	c.written <- err
}

// bodyError is a failure to read the client's request body.
type bodyError struct{ err error }

func (e bodyError) Error() string { return "proxy: reading request body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// copyBody writes the body, exactly ContentLength bytes of it when that is
// known and chunked otherwise, and flushes. A chunked body is flushed chunk
// by chunk so that a request that streams (an upload that trickles, a
// duplex protocol) keeps moving.
func (c *upConn) copyBody(req *http.Request, body io.Reader) error {
	bufp := copyBufs.Get().(*[copyBufSize]byte)
	defer copyBufs.Put(bufp)
	buf := bufp[:]
	chunked := req.ContentLength < 0
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(c.bw)
	}
	remaining := req.ContentLength
	for chunked || remaining > 0 {
		p := buf
		if !chunked && int64(len(p)) > remaining {
			p = p[:remaining]
		}
		n, rerr := body.Read(p)
		if n > 0 {
			remaining -= int64(n)
			var werr error
			if chunked {
				if _, werr = cw.Write(p[:n]); werr == nil {
					werr = c.bw.Flush()
				}
			} else {
				_, werr = c.bw.Write(p[:n])
			}
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			if !chunked && remaining > 0 {
				return bodyError{fmt.Errorf("%d bytes short of Content-Length %d: %w", remaining, req.ContentLength, io.ErrUnexpectedEOF)}
			}
			break
		}
		if rerr != nil {
			return bodyError{rerr}
		}
	}
	if chunked {
		if err := cw.Close(); err != nil { // "0\r\n"
			return err
		}
		for k, vv := range req.Trailer {
			for _, v := range vv {
				writeField(c.bw, k, v)
			}
		}
		c.bw.WriteString("\r\n")
	}
	return c.bw.Flush()
}

// max1xx bounds the informational answers read before the final one.
const max1xx = 10

func (c *upConn) readResponse(req *http.Request) (*http.Response, error) {
	if _, err := c.br.Peek(1); err != nil {
		if c.reused && c.written == nil && isConnClosed(err) &&
			replayable(req.Method, req.Body != nil && req.Body != http.NoBody, hasIdempotencyKey(req.Header)) {
			// Not a byte of answer on a connection the app may have closed
			// just as our request reached it (an idle timeout): it most
			// likely never got to a handler, and sending it again is
			// harmless. The rule is http.Transport's.
			return nil, retryableError{fmt.Errorf("%w: %w", errServerClosedIdle, err)}
		}
		return nil, err
	}
	var trace *httptrace.ClientTrace
	for n := 0; ; n++ {
		c.limitHead()
		resp, err := http.ReadResponse(c.br, req)
		c.endHead()
		if err != nil {
			return nil, err
		}
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			resp.Body = &upgradedConn{c: c}
			if c.t.streams != nil && isWebSocket(resp.Header.Get("Upgrade")) {
				resp.Body = c.t.streams.webSocket(resp.Body.(io.ReadWriteCloser), c.nc)
			}
			return resp, nil
		}
		if code >= 200 || code < 100 {
			c.attachBody(resp)
			if c.t.streams != nil && resp.ContentLength < 0 && resp.Body != http.NoBody && isEventStream(resp.Header.Get("Content-Type")) {
				resp.Body = c.t.streams.eventStream(resp.Body, c.nc)
			}
			return resp, nil
		}
		if n == max1xx {
			return nil, fmt.Errorf("proxy: more than %d informational answers", max1xx)
		}
		if trace == nil {
			trace = httptrace.ContextClientTrace(req.Context())
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
}

func isConnClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// hasIdempotencyKey reports whether h marks its request as safe to replay.
func hasIdempotencyKey(h http.Header) bool {
	for _, k := range idempotencyKeys {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// attachBody wraps resp.Body so that c goes back to the pool, or is closed,
// once the body has been read to its end or closed.
func (c *upConn) attachBody(resp *http.Response) {
	keep := !resp.Close
	if resp.Body == http.NoBody {
		c.release(keep)
		return
	}
	resp.Body = &responseBody{c: c, rc: resp.Body, keep: keep}
}

// release ends c's request: back to the pool if keep and the request was
// fully written and never cancelled, else closed.
func (c *upConn) release(keep bool) {
	if !c.stop() {
		keep = false // the context watcher has poisoned the deadline
	}
	if keep && c.written != nil {
		keep = c.waitWritten()
	}
	if keep {
		c.t.put(c)
	} else {
		c.nc.Close()
	}
}

// waitWritten reports whether the request body was written without error.
// Usually the writer finished long before the answer; if it is still busy
// (an app that answered without reading everything) give it a moment, as
// http.Transport does, then give up on the connection.
func (c *upConn) waitWritten() bool {
	select {
	case err := <-c.written:
		return err == nil
	default:
	}
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-c.written:
		return err == nil
	case <-t.C:
		return false
	}
}

// responseBody is an answer's body on c.
type responseBody struct {
	c    *upConn
	rc   io.ReadCloser
	keep bool
	done atomic.Bool
}

func (b *responseBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.finish(b.keep)
	case err != nil:
		b.finish(false)
	}
	return n, err
}

func (b *responseBody) Close() error {
	// Not read to its end: what is left of it would be read by the next
	// request on this connection, so the connection goes.
	b.finish(false)
	return nil
}

func (b *responseBody) finish(keep bool) {
	if b.done.CompareAndSwap(false, true) {
		b.c.release(keep)
	}
}

// upgradedConn is a 101 answer's Body: the connection itself, readable
// (through what is already buffered) and writable, closed with the body.
type upgradedConn struct {
	c    *upConn
	once sync.Once
}

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.c.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.c.nc.Write(p) }
func (u *upgradedConn) Close() error {
	err := net.ErrClosed
	u.once.Do(func() {
		u.c.stop()
		err = u.c.nc.Close()
	})
	return err
}
