// Package proxy is baton's request path: an http.Handler that forwards every
// request to the one live Upstream, and lets the control path swap that
// upstream atomically.
//
// The model: the live upstream sits behind an atomic.Pointer. A request loads
// it, counts itself in flight on it, and is proxied by that upstream's own
// httputil.ReverseProxy and connection pool (transport.go), or by
// FastServer's loop over the same pool. A swap stores a new pointer; the
// next request goes to the new upstream, requests already in flight finish on
// the old one, and the old one's in-flight count tells a drain when it is done.
// Nothing on the request path takes a lock.
//
// FastServer (fast.go) serves the Handler on HTTP/1.1 connections with a
// server loop of its own instead of net/http's server and ReverseProxy,
// and hands what it does not serve to an http.Server around the same
// Handler. It takes listeners and a tls.Config from the caller: opening
// sockets and managing certificates stay outside this package (edge), but
// the handshake is done here because the loop owns the connection.
//
// The package uses only the standard library.
package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultRetryTimeout bounds how long a request that could not reach any app
// (connection refused) keeps being retried on the live upstream before it
// becomes a 502.
const DefaultRetryTimeout = 2 * time.Second

// Options configures a Handler. The zero value is usable.
type Options struct {
	// Logger receives upstream errors. Nil means slog.New(slog.DiscardHandler).
	Logger *slog.Logger
	// RetryTimeout bounds retries of requests that never reached an app.
	// Zero means DefaultRetryTimeout; negative disables retries.
	RetryTimeout time.Duration
	// Observer, if set, is told about every finished request and every
	// upstream error. It is called on the request path and must be cheap.
	Observer Observer
	// UpstreamTimeout bounds how long the app may take to send its
	// response headers, counted from the start of the round trip (request
	// body and dial retries included); a request that passes it gets 504
	// and is logged with kind "timeout". It does not bound a response body
	// (a stream, a long download). Zero means no bound.
	UpstreamTimeout time.Duration
	// TrustedProxies are the networks (load balancers, CDNs) whose
	// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are believed:
	// for a request from one of them X-Real-IP is the client they forwarded
	// for. Nil trusts nobody: X-Real-IP is the socket peer, and any
	// X-Forwarded-For the client sent is kept but only appended to.
	TrustedProxies []netip.Prefix
	// UnderscoresInHeaders keeps request header fields whose name has an
	// "_" in it. False (the default, as nginx's underscores_in_headers
	// off) drops them: app servers that map "-" and "_" to the same name
	// (CGI, WSGI, Rack) would read X_Real_IP as X-Real-IP.
	UnderscoresInHeaders bool
	// MaxBodyBytes refuses request bodies larger than this with 413
	// (bodylimit.go). Zero or negative means no limit.
	MaxBodyBytes int64
	// AllowTrace passes TRACE requests to the app. False (the default)
	// answers them 405: TRACE echoes the request, cookies included.
	AllowTrace bool
}

// Observer receives request outcomes, e.g. to export metrics. Implementations
// must be safe for concurrent use.
type Observer interface {
	// RequestDone is called once per proxied request with the upstream that
	// served it, what the request was, the status written (0 if none) and
	// the request's duration. Both front ends fill in every field of r.
	RequestDone(u *Upstream, r RequestInfo, status int, d time.Duration)
	// UpstreamError is called for each failed upstream round trip; kind is
	// one of "dial", "reset", "timeout", "canceled", "other". retried tells
	// whether the request was retried instead of failing.
	UpstreamError(u *Upstream, kind string, retried bool)
}

// Handler is the public reverse proxy. It is safe for concurrent use; create
// it with NewHandler and give it an upstream with Route before serving.
type Handler struct {
	live         atomic.Pointer[Upstream]
	split        atomic.Pointer[Split] // nil unless a canary takes a share: see split.go
	logger       *slog.Logger
	retryTimeout time.Duration
	respTimeout  time.Duration // Options.UpstreamTimeout
	observer     Observer
	trusted      trustedProxies
	underscores  bool   // Options.UnderscoresInHeaders
	allowTrace   bool   // Options.AllowTrace
	maxBody      int64  // Options.MaxBodyBytes
	tooLarge     string // the 413's body, made once
	bufPool      bufferPool
	mu           sync.Mutex // serialises Route; never taken by requests
}

// NewHandler returns a Handler with no live upstream: until Route is called
// it answers 503.
func NewHandler(opts Options) *Handler {
	h := &Handler{
		logger:       opts.Logger,
		retryTimeout: opts.RetryTimeout,
		respTimeout:  opts.UpstreamTimeout,
		observer:     opts.Observer,
		trusted:      opts.TrustedProxies,
		underscores:  opts.UnderscoresInHeaders,
		allowTrace:   opts.AllowTrace,
		maxBody:      opts.MaxBodyBytes,
	}
	if h.maxBody > 0 {
		h.tooLarge = tooLargeMessage(h.maxBody)
	}
	if h.logger == nil {
		h.logger = slog.New(slog.DiscardHandler)
	}
	if h.retryTimeout == 0 {
		h.retryTimeout = DefaultRetryTimeout
	}
	return h
}

// Route makes u the live upstream and returns the previous one (nil on the
// first call). Requests that already loaded the previous upstream finish on
// it; wait for its InFlight to reach zero before stopping its app. An
// Upstream belongs to the first Handler that routes to it.
func (h *Handler) Route(u *Upstream) (previous *Upstream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u.init.Do(func() { u.proxy = h.newReverseProxy(u) })
	return h.live.Swap(u)
}

// Live returns the live upstream, or nil if none was routed yet.
func (h *Handler) Live() *Upstream { return h.live.Load() }

// ServeHTTP proxies r to the live upstream or, while a Split is active, to
// whichever of the live upstream and the canary the split picks for r.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code, msg := h.refuse(r.Method); code != 0 {
		http.Error(w, msg, code)
		return
	}
	w, r, ok := h.limitBody(w, r)
	if !ok {
		return
	}
	var u *Upstream
	if s := h.split.Load(); s == nil {
		u = h.acquire()
	} else {
		u = h.acquireSplit(s, w, r)
	}
	if u == nil {
		http.Error(w, msgNotRouted, http.StatusServiceUnavailable)
		return
	}
	if h.observer == nil {
		defer u.release()
		u.proxy.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, served: u}
	// retryTransport tells sw which upstream served the request in the
	// end, so that the Observer hears of the one the fast path would name.
	r = r.WithContext(context.WithValue(r.Context(), statusWriterKey{}, sw))
	defer func() {
		u.release()
		h.observer.RequestDone(sw.served, requestInfo(r), sw.status, time.Since(start))
	}()
	u.proxy.ServeHTTP(sw, r)
}

// acquire returns the live upstream with one more request counted in flight
// on it. The second load closes the race with a concurrent Route: if the
// pointer moved between the load and the increment, a drain that already saw
// zero in flight could stop the app under us, so count on the new one instead.
func (h *Handler) acquire() *Upstream {
	for {
		u := h.live.Load()
		if u == nil {
			return nil
		}
		u.inFlight.Add(1)
		if h.live.Load() == u {
			return u
		}
		u.inFlight.Add(-1)
	}
}

// The rules below decide for both front ends (FastServer and ServeHTTP)
// what of a client's request baton refuses or drops; each front end calls
// them with what it parsed.

// refuse returns the status and body with which a request with method is
// answered by baton itself instead of the app, or 0 if it goes on. TRACE
// is refused unless Options.AllowTrace: it makes the app echo the request,
// cookies and credentials included, to whoever can get a script to send it.
func (h *Handler) refuse(method string) (int, string) {
	if method == http.MethodTrace && !h.allowTrace {
		return http.StatusMethodNotAllowed, msgTraceRefused
	}
	return 0, ""
}

const msgTraceRefused = "405 Method Not Allowed: TRACE is turned off (baton serve --allow-trace turns it on)"

// dropsRequestField reports whether a request header field named name is
// dropped before the request reaches the app: a name with "_" in it, unless
// keepUnderscores (Options.UnderscoresInHeaders). CGI, WSGI and Rack map
// "-" and "_" to the same variable, so X_Real_IP sent by a client would
// merge into the X-Real-IP baton sets (nginx drops them for the same
// reason: underscores_in_headers off).
func dropsRequestField[T string | []byte](keepUnderscores bool, name T) bool {
	if keepUnderscores {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '_' {
			return true
		}
	}
	return false
}

func (h *Handler) newReverseProxy(u *Upstream) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Not SetURL: it would replace the client's Host header with
			// the app's address, and the app wants the public host name.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = u.addr
			for k := range pr.Out.Header {
				if dropsRequestField(h.underscores, k) {
					delete(pr.Out.Header, k)
				}
			}
			h.setForwarded(pr)
		},
		Transport:    &retryTransport{h: h, u: u},
		BufferPool:   &h.bufPool,
		ErrorHandler: h.errorHandler(u),
		ErrorLog:     slog.NewLogLogger(h.logger.Handler(), slog.LevelWarn),
	}
}

// setForwarded sets the forwarding headers of pr.Out: exactly what
// ProxyRequest.SetXForwarded sets, except that X-Forwarded-For appends to
// the client's as nginx's $proxy_add_x_forwarded_for does, and then X-Real-Ip,
// the socket peer (or the client a trusted proxy forwarded for), the value an
// app can trust. SetXForwarded and Header.Set allocate a one-element slice per
// header; here the four values share one array, which saves three
// allocations per request. TestSetForwardedMatchesSetXForwarded pins the
// result to SetXForwarded's.
func (h *Handler) setForwarded(pr *httputil.ProxyRequest) {
	out := pr.Out.Header
	vals := make([]string, 4)
	if host, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		if prior := pr.In.Header["X-Forwarded-For"]; len(prior) > 0 {
			host = strings.Join(prior, ", ") + ", " + host
		}
		vals[0] = host
		out["X-Forwarded-For"] = vals[0:1:1]
	} else {
		delete(out, "X-Forwarded-For")
	}
	vals[1] = pr.In.Host
	out["X-Forwarded-Host"] = vals[1:2:2]
	vals[2] = "http"
	if pr.In.TLS != nil {
		vals[2] = "https"
	}
	out["X-Forwarded-Proto"] = vals[2:3:3]
	if ip := h.clientIP(pr); ip != "" {
		vals[3] = ip
		out["X-Real-Ip"] = vals[3:4:4]
	}
}

func (h *Handler) errorHandler(u *Upstream) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		code, msg := h.failure(u, err, requestInfo(r), r.Context().Err() != nil)
		switch code {
		case 0:
			// No answer, and no empty 200 either: net/http closes the
			// connection (resets an HTTP/2 stream), as the fast path does.
			panic(http.ErrAbortHandler)
		case http.StatusRequestEntityTooLarge:
			w.Header().Set("Connection", "close") // the rest of the body is not read
		}
		http.Error(w, msg, code)
	}
}

// requestInfo describes r to observers and logs.
func requestInfo(r *http.Request) RequestInfo {
	return RequestInfo{Method: r.Method, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, RemoteAddr: r.RemoteAddr}
}

// retryTransport sends a request to its upstream and, if the request could
// not be delivered at all (no connection to the app could be made), retries
// it on whatever upstream is live by then. A dial failure means not a byte of
// the request reached an app, so this is safe for every method, POST included.
type retryTransport struct {
	h *Handler
	u *Upstream
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if d := t.h.respTimeout; d > 0 {
		return t.roundTripTimeout(req, d)
	}
	return t.roundTrip(req)
}

// upstreamTimeoutError is a round trip cut short by Options.UpstreamTimeout.
// It is a net.Error whose Timeout is true, so it is answered with 504.
type upstreamTimeoutError struct{ d time.Duration }

func (e upstreamTimeoutError) Error() string {
	return "proxy: no response headers from the app within the upstream timeout of " + e.d.String()
}
func (upstreamTimeoutError) Timeout() bool   { return true }
func (upstreamTimeoutError) Temporary() bool { return true }

// roundTripTimeout is roundTrip with a deadline on the response headers: a
// timer cancels the request's context (which aborts the exchange and closes
// its connection) unless the headers came first. The context lives on
// until the response body is closed.
func (t *retryTransport) roundTripTimeout(req *http.Request, d time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	timer := time.AfterFunc(d, cancel)
	resp, err := t.roundTrip(req.WithContext(ctx))
	if !timer.Stop() && req.Context().Err() == nil {
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		return nil, upstreamTimeoutError{d}
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose(resp.Body, cancel)
	return resp, nil
}

// cancelOnClose wraps b so that cancel runs once b is closed, keeping a 101
// answer's body writable.
func cancelOnClose(b io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	if rwc, ok := b.(io.ReadWriteCloser); ok {
		return &cancelRWC{ReadWriteCloser: rwc, cancel: cancel}
	}
	return &cancelBody{ReadCloser: b, cancel: cancel}
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

type cancelRWC struct {
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (b *cancelRWC) Close() error {
	err := b.ReadWriteCloser.Close()
	b.cancel()
	return err
}

func (t *retryTransport) roundTrip(req *http.Request) (*http.Response, error) {
	if t.h.retryTimeout < 0 {
		return t.u.transport.RoundTrip(req)
	}
	// http.Transport closes the request body when a dial fails; shield the
	// client's body so a retry can still send it.
	var body io.ReadCloser
	if req.Body != nil && req.Body != http.NoBody {
		body = req.Body
		req.Body = noCloseBody{body}
	}
	resp, err := t.u.transport.RoundTrip(req)
	// t.u is counted in flight by ServeHTTP, which releases it at the end.
	// On another upstream the request no longer waits on t.u's app, so its
	// count moves there (back holds what to give back to t.u): a drain of
	// t.u (a dead app, the usual reason to be here) must not wait for it.
	retry := dialRetry{h: t.h}
	var cur, back = t.u, (*Upstream)(nil)
	for err != nil {
		next, ok := retry.next(cur, err, req.Context().Done())
		if !ok {
			if cur != t.u {
				releaseBack(cur, back)
			}
			if ctxErr := req.Context().Err(); ctxErr != nil && isDialError(err) {
				return nil, ctxErr // the client left while the retry waited
			}
			return nil, err
		}
		if next != cur { // next is counted in flight by retry.next
			if cur != t.u {
				cur.release()
			}
			switch {
			case next == t.u:
				next.inFlight.Add(-1) // ServeHTTP's count is t.u's
				if back != nil {
					back.inFlight.Add(1)
					back = nil
				}
			case back == nil:
				back = t.u
				back.inFlight.Add(-1)
			}
			cur = next
			if sw, ok := req.Context().Value(statusWriterKey{}).(*statusWriter); ok {
				sw.served = cur
			}
		}
		out := req
		if cur != t.u {
			out = req.Clone(req.Context())
			out.URL.Host = cur.addr
			if body != nil {
				out.Body = noCloseBody{body}
			}
		}
		resp, err = cur.transport.RoundTrip(out)
	}
	if cur != t.u {
		resp.Body = releaseBody(resp.Body, cur, back)
	}
	return resp, nil
}

// releaseBody wraps an upstream response body so that u's in-flight count
// is released when the body is closed, and back's (unless nil) taken again.
// A 101 response's body is the upgraded connection and must stay writable.
func releaseBody(b io.ReadCloser, u, back *Upstream) io.ReadCloser {
	if rwc, ok := b.(io.ReadWriteCloser); ok {
		return &releasingRWC{ReadWriteCloser: rwc, u: u, back: back}
	}
	return &releasingBody{ReadCloser: b, u: u, back: back}
}

type releasingBody struct {
	io.ReadCloser
	u, back *Upstream
	once    sync.Once
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { releaseBack(b.u, b.back) })
	return err
}

type releasingRWC struct {
	io.ReadWriteCloser
	u, back *Upstream
	once    sync.Once
}

func (b *releasingRWC) Close() error {
	err := b.ReadWriteCloser.Close()
	b.once.Do(func() { releaseBack(b.u, b.back) })
	return err
}

func releaseBack(u, back *Upstream) {
	u.release()
	if back != nil {
		back.inFlight.Add(1)
	}
}

type noCloseBody struct{ io.ReadCloser }

func (noCloseBody) Close() error { return nil }

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case isDialError(err):
		return "dial"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return "other"
}

// statusWriter records the status code for the Observer. It passes Flush and
// Hijack through via Unwrap, which http.ResponseController uses.
type statusWriter struct {
	http.ResponseWriter
	status int
	served *Upstream // the upstream that answered, after any retry
}

// statusWriterKey is the request context key of an observed request's
// statusWriter.
type statusWriterKey struct{}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 || w.status < 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// copyBufSize is the size of the buffers body copies use.
const copyBufSize = 32 << 10

// copyBufs holds the body copy buffers of ReverseProxy (through bufferPool)
// and of the transport's request body writer. It holds array pointers, so
// neither Get nor Put allocates.
var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// bufferPool hands ReverseProxy pooled copy buffers so that body copies do
// not allocate per request.
type bufferPool struct{}

func (bufferPool) Get() []byte { return copyBufs.Get().(*[copyBufSize]byte)[:] }

func (bufferPool) Put(buf []byte) {
	if len(buf) == copyBufSize {
		copyBufs.Put((*[copyBufSize]byte)(buf))
	}
}
