package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests in this file pin down the behaviour of the fast path
// (FastServer, fast.go) as a client and an app see it on the wire. Each
// checks servedFast (or handedOff) as well, so that a pass means the fast
// path served the request and not Fallback. Helpers are prefixed fb to
// keep clear of fast_test.go; app, rawApp, readRequest, deadAddr and
// waitFor come from handler_test.go and transport_test.go.

// fbServer serves h with a FastServer (Fallback: an http.Server around the
// same h) on a loopback listener and returns it with its address. tweak,
// if set, adjusts the FastServer and its Fallback before Serve. Cleanup
// closes the listener, the fast path's connections and Fallback, and waits
// for the fast path's connections to end, so that none of them puts an app
// connection back into a pool after the apps are gone.
func fbServer(t *testing.T, h *Handler, tweak func(*FastServer)) (*FastServer, string) {
	t.Helper()
	fs := &FastServer{Router: SingleRoute(h), Fallback: &http.Server{Handler: h}}
	if tweak != nil {
		tweak(fs)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- fs.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v; want http.ErrServerClosed", err)
		}
		fs.Close()
		fs.Fallback.Close()
		deadline := time.Now().Add(2 * time.Second)
		for {
			fs.mu.Lock()
			n := len(fs.conns)
			fs.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%d fast-path connection(s) still being served 2s after Close", n)
				break
			}
			time.Sleep(time.Millisecond)
		}
	})
	return fs, ln.Addr().String()
}

// fbDial connects a raw client to addr. Every read and write on it fails
// after 5 s, so that a test that breaks fails instead of hanging.
func fbDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// fbRoundTrip writes the raw request req on c and reads the answer and its
// whole body.
func fbRoundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("writing request: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading answer to %.40q: %v", req, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body of answer to %.40q: %v (got %q)", req, err, b)
	}
	return resp, string(b)
}

// fbGet is a raw GET of path with Host fast.example.
func fbGet(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: fast.example\r\n\r\n"
}

// fbExpectClosed fails unless the server closes c (after whatever the
// test has read from br) within 2 s.
func fbExpectClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := br.ReadByte()
	switch {
	case err == nil:
		t.Errorf("read %q after the answer; want the connection closed", b)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		t.Errorf("after the answer: %v; want the connection closed (EOF)", err)
	}
}

// fbServedFast fails unless the fast path served want requests and handed
// no connection to Fallback.
func fbServedFast(t *testing.T, fs *FastServer, want uint64) {
	t.Helper()
	if n, h := fs.servedFast.Load(), fs.handedOff.Load(); n != want || h != 0 {
		t.Errorf("servedFast = %d, handedOff = %d; want %d and 0 (the fast path, not Fallback, serves these)", n, h, want)
	}
}

// 1. An answer without Content-Length or chunking ends when the app closes
// the connection: the client gets all of it, is told "Connection: close",
// and its connection is closed after it.
func TestFastBehaviourCloseDelimitedAnswer(t *testing.T) {
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello")
	})
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	resp, body := fbRoundTrip(t, c, br, fbGet("/"))
	if resp.StatusCode != 200 || body != "hello" {
		t.Errorf("got %d %q; want 200 \"hello\"", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("answer has no \"Connection: close\" (header %v); a close-delimited body must say so", resp.Header)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("Content-Type %q; want text/plain", ct)
	}
	fbExpectClosed(t, c, br)
	fbServedFast(t, fs, 1)
}

// 2. An app that breaks off mid-body: the client gets what there was and
// an error, and the connection is closed, not reused with a broken frame.
func TestFastBehaviourAnswerBrokenOffMidBody(t *testing.T) {
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
	})
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	io.WriteString(c, fbGet("/"))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the head: %v", err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != 100 {
		t.Errorf("got %d with Content-Length %d; want 200 and the app's 100", resp.StatusCode, resp.ContentLength)
	}
	b, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading the body: %q, %v; want a truncated body (unexpected EOF)", b, err)
	}
	if string(b) != "0123456789" {
		t.Errorf("body %q; want the 10 bytes the app sent", b)
	}
	fbExpectClosed(t, c, br)
	fbServedFast(t, fs, 1)
}

// 3. An answer that is not HTTP is a 502, and the client's connection
// stays usable for the next request.
func TestFastBehaviourMalformedAnswerIs502(t *testing.T) {
	var n atomic.Int32
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if n.Add(1) == 1 {
				io.WriteString(c, "garbage\r\n\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	resp, body := fbRoundTrip(t, c, br, fbGet("/bad"))
	if resp.StatusCode != http.StatusBadGateway || body != "502 Bad Gateway: the app is not answering\n" {
		t.Errorf("malformed answer: %d %q; want 502 \"502 Bad Gateway: the app is not answering\\n\"", resp.StatusCode, body)
	}
	if resp.Close {
		t.Errorf("the 502 closes the connection; the request was read whole, it should stay open")
	}
	resp, body = fbRoundTrip(t, c, br, fbGet("/good"))
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("next request on the same connection: %d %q; want 200 \"ok\"", resp.StatusCode, body)
	}
	fbServedFast(t, fs, 2)
}

// 4. 103 Early Hints reach the client, with their Link, before the final
// answer.
func TestFastBehaviourEarlyHints(t *testing.T) {
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Type: text/html\r\n\r\npage")
		}
	})
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	io.WriteString(c, fbGet("/"))
	hints, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the first head: %v", err)
	}
	if hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") != "</style.css>; rel=preload" {
		t.Errorf("first head: %d Link %q; want 103 with Link </style.css>; rel=preload", hints.StatusCode, hints.Header.Get("Link"))
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the final head: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(b) != "page" {
		t.Errorf("final answer: %d %q %v; want 200 \"page\"", resp.StatusCode, b, err)
	}
	if resp.Header.Get("Link") != "" {
		t.Errorf("final answer has Link %q; it belonged to the 103 only", resp.Header.Get("Link"))
	}
	fbServedFast(t, fs, 1)
}

// 5. An answer head far larger than the app connection's 4 KiB buffer is
// relayed whole, and the connection goes on.
func TestFastBehaviourLargeAnswerHead(t *testing.T) {
	const n, size = 20, 1000
	value := func(i int) string { return fmt.Sprintf("%02d-", i) + strings.Repeat(string(rune('a'+i)), size-3) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range n {
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), value(i))
		}
		io.WriteString(w, "body after a big head")
	}))
	t.Cleanup(srv.Close)
	u, err := NewUpstream("blue", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	for round := range 2 { // the second on the same connections, both sides
		resp, body := fbRoundTrip(t, c, br, fbGet("/"))
		if resp.StatusCode != 200 || body != "body after a big head" {
			t.Errorf("round %d: %d %q; want 200 \"body after a big head\"", round, resp.StatusCode, body)
		}
		for i := range n {
			k := fmt.Sprintf("X-Big-%d", i)
			if got := resp.Header.Values(k); len(got) != 1 || got[0] != value(i) {
				t.Errorf("round %d: %s = %.20q... (%d values); want the app's %d-byte value", round, k, got, len(got), size)
			}
		}
	}
	fbServedFast(t, fs, 2)
}

// 6. An app that answers an upload without reading it: the client gets the
// answer, the fast path does not hang on the unread body, and the
// connection is closed after (the rest of the body was never read).
func TestFastBehaviourEarlyAnswerToUpload(t *testing.T) {
	stop := make(chan struct{})
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil { // the head only
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
		<-stop // keep the connection open, reading nothing
	})
	t.Cleanup(func() { close(stop) }) // before rawApp's cleanup waits for this goroutine
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	// Larger than the kernel will buffer for an app that reads nothing
	// (its receive window stays at tcp_rmem's default; the proxy's send
	// buffer grows to tcp_wmem's maximum, 4 MiB by default). With 1 MiB
	// the whole body fits in those buffers on Linux: the exchange then
	// ends cleanly, the app connection is pooled and the client's is
	// rightly kept, as with http.Transport, and nothing here is tested.
	const size = 8 << 20
	c, br := fbDial(t, addr)
	start := time.Now()
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: fast.example\r\nContent-Length: %d\r\n\r\n", size)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.Write(make([]byte, size)) // fails once the proxy closes the connection; that is fine
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d; want the app's 413", resp.StatusCode)
	}
	fbExpectClosed(t, c, br)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s; want the fast path to give up on the unread body quickly", took)
	}
	c.Close()
	<-wrote
	fbServedFast(t, fs, 1)
	waitFor(t, func() bool { return u.InFlight() == 0 })
}

// 7. An app that closes every connection right after its answer, without
// saying so: the pooled connection is dead by the next request, and the
// fast path must notice (or retry) rather than answer 502.
func TestFastBehaviourStalePooledConnection(t *testing.T) {
	var conns atomic.Int32
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// and close at once
	})
	h := NewHandler(Options{RetryTimeout: -1}) // no dial retries to hide behind
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	const n = 50
	for i := range n {
		resp, body := fbRoundTrip(t, c, br, fbGet(fmt.Sprintf("/%d", i)))
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q; want 200 \"ok\"", i, resp.StatusCode, body)
		}
		if resp.Close {
			t.Fatalf("request %d: the client's connection is closed; want it kept alive", i)
		}
	}
	if got := conns.Load(); got < n {
		t.Errorf("the app saw %d connections for %d requests; want one each", got, n)
	}
	fbServedFast(t, fs, n)
}

// 8. Nothing listens on the app's address yet: the request is retried on
// the same upstream until the app comes up (within RetryTimeout).
func TestFastBehaviourDialRetry(t *testing.T) {
	addr0 := deadAddr(t)
	u, err := NewUpstream("blue", addr0)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{}) // RetryTimeout: DefaultRetryTimeout, 2s
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	const late = 150 * time.Millisecond
	started := make(chan error, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "up at last")
	}))
	t.Cleanup(func() {
		if <-started == nil {
			srv.Close()
		}
	})
	time.AfterFunc(late, func() {
		l, err := net.Listen("tcp", addr0)
		if err == nil {
			srv.Listener.Close()
			srv.Listener = l
			srv.Start()
		}
		started <- err
	})

	c, br := fbDial(t, addr)
	start := time.Now()
	resp, body := fbRoundTrip(t, c, br, fbGet("/"))
	took := time.Since(start)
	if resp.StatusCode != 200 || body != "up at last" {
		t.Errorf("got %d %q; want 200 \"up at last\" once the app listens", resp.StatusCode, body)
	}
	if took < late {
		t.Errorf("answered after %s, before the app listened at %s", took, late)
	}
	fbServedFast(t, fs, 1)
}

// 9. While Draining says so, every answer carries "Connection: close" and
// the connection is closed after it.
func TestFastBehaviourDraining(t *testing.T) {
	_, u := app(t, "blue")
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, func(fs *FastServer) { fs.Draining = func() bool { return true } })

	c, br := fbDial(t, addr)
	resp, body := fbRoundTrip(t, c, br, fbGet("/"))
	if resp.StatusCode != 200 || body != "blue" {
		t.Errorf("got %d %q; want 200 \"blue\"", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("answer while draining has no \"Connection: close\"")
	}
	fbExpectClosed(t, c, br)
	fbServedFast(t, fs, 1)
}

// fbConnStates records Fallback.ConnState calls.
type fbConnStates struct {
	mu  sync.Mutex
	log []fbConnState
}

type fbConnState struct {
	remote  string // the conn's RemoteAddr: the client's local address
	wrapped bool   // a *handoffConn, as Fallback sees a handed-over conn
	state   http.ConnState
}

func (r *fbConnStates) record(c net.Conn, st http.ConnState) {
	_, wrapped := c.(*handoffConn)
	r.mu.Lock()
	r.log = append(r.log, fbConnState{c.RemoteAddr().String(), wrapped, st})
	r.mu.Unlock()
}

// of returns the states reported for the client at local, on the conn the
// fast path accepted (wrapped false) or the one Fallback got (true).
func (r *fbConnStates) of(local string, wrapped bool) []http.ConnState {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []http.ConnState
	for _, e := range r.log {
		if e.remote == local && e.wrapped == wrapped {
			out = append(out, e.state)
		}
	}
	return out
}

func fbStatesEqual(a, b []http.ConnState) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// 10. ConnState sees a fast-path connection as net/http would report it,
// and a handed-over one as hijacked.
func TestFastBehaviourConnState(t *testing.T) {
	_, u := app(t, "blue")
	h := NewHandler(Options{})
	h.Route(u)
	var states fbConnStates
	fs, addr := fbServer(t, h, func(fs *FastServer) { fs.Fallback.ConnState = states.record })

	// A request the fast path serves.
	c, br := fbDial(t, addr)
	local := c.LocalAddr().String()
	if resp, body := fbRoundTrip(t, c, br, fbGet("/")); resp.StatusCode != 200 || body != "blue" {
		t.Fatalf("fast request: %d %q; want 200 \"blue\"", resp.StatusCode, body)
	}
	fbServedFast(t, fs, 1)
	want := []http.ConnState{http.StateNew, http.StateActive, http.StateIdle}
	waitFor(t, func() bool { return len(states.of(local, false)) >= len(want) })
	if got := states.of(local, false); !fbStatesEqual(got, want) {
		t.Errorf("fast conn states after one request: %v; want %v", got, want)
	}
	c.Close()
	want = append(want, http.StateClosed)
	waitFor(t, func() bool { return len(states.of(local, false)) >= len(want) })
	if got := states.of(local, false); !fbStatesEqual(got, want) {
		t.Errorf("fast conn states after the client closed: %v; want %v", got, want)
	}

	// A chunked request: Fallback's.
	c2, br2 := fbDial(t, addr)
	local2 := c2.LocalAddr().String()
	resp, body := fbRoundTrip(t, c2, br2, "POST /echo HTTP/1.1\r\nHost: fast.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if resp.StatusCode != 200 || body != "blue hello" {
		t.Errorf("chunked request: %d %q; want 200 \"blue hello\"", resp.StatusCode, body)
	}
	if n := fs.handedOff.Load(); n != 1 {
		t.Errorf("handedOff = %d; want 1 (a chunked request is Fallback's)", n)
	}
	if n := fs.servedFast.Load(); n != 1 {
		t.Errorf("servedFast = %d; want still 1", n)
	}
	want2 := []http.ConnState{http.StateNew, http.StateActive, http.StateHijacked}
	if got := states.of(local2, false); !fbStatesEqual(got, want2) {
		t.Errorf("handed-over conn states, as the fast path reports them: %v; want %v", got, want2)
	}
	waitFor(t, func() bool { return len(states.of(local2, true)) >= 3 })
	if got := states.of(local2, true); !fbStatesEqual(got[:3], []http.ConnState{http.StateNew, http.StateActive, http.StateIdle}) {
		t.Errorf("handed-over conn states, as Fallback reports them: %v; want new, active, idle", got)
	}
	c2.Close()
	waitFor(t, func() bool {
		s := states.of(local2, true)
		return len(s) > 0 && s[len(s)-1] == http.StateClosed
	})
	if got := states.of(local2, false); !fbStatesEqual(got, want2) {
		t.Errorf("handed-over conn states after close: %v; want still %v (Closed is Fallback's to report)", got, want2)
	}
}

// 11. A streamed answer reaches the client chunk by chunk: the first event
// arrives while the app is still holding back the second.
func TestFastBehaviourStreamingIsFlushed(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	releaseApp := func() { once.Do(func() { close(release) }) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "event: 2\n\n")
	}))
	t.Cleanup(srv.Close)
	u, err := NewUpstream("blue", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)
	t.Cleanup(releaseApp) // runs first: lets a stuck relay finish

	c, br := fbDial(t, addr)
	io.WriteString(c, fbGet("/events"))
	c.SetReadDeadline(time.Now().Add(time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer head while the app holds back its second event: %v", err)
	}
	body := bufio.NewReader(resp.Body)
	first := make([]byte, len("event: 1\n\n"))
	if _, err := io.ReadFull(body, first); err != nil || string(first) != "event: 1\n\n" {
		t.Fatalf("first event: %q, %v; want it before the app sends the second", first, err)
	}
	releaseApp()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	rest, err := io.ReadAll(body)
	if err != nil || string(rest) != "event: 2\n\n" {
		t.Errorf("rest of the stream: %q, %v; want \"event: 2\\n\\n\" and its end", rest, err)
	}
	fbServedFast(t, fs, 1)
}

// 12. An app slower than UpstreamTimeout gets the client a 504 at the
// timeout.
func TestFastBehaviourUpstreamTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "too late")
	}))
	t.Cleanup(srv.Close)
	u, err := NewUpstream("blue", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{UpstreamTimeout: 100 * time.Millisecond})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	start := time.Now()
	resp, body := fbRoundTrip(t, c, br, fbGet("/slow"))
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || body != "504 Gateway Timeout: the app did not answer in time\n" {
		t.Errorf("got %d %q; want 504 \"504 Gateway Timeout: the app did not answer in time\\n\"", resp.StatusCode, body)
	}
	if took < 100*time.Millisecond || took > 600*time.Millisecond {
		t.Errorf("answered after %s; want about the 100ms timeout", took)
	}
	fbServedFast(t, fs, 1)
	waitFor(t, func() bool { return u.InFlight() == 0 })
}

// 12b. UpstreamTimeout bounds the final answer's head, not the first 1xx:
// an app that sends 103 Early Hints and then hangs gets the client the
// 103 and then a 504 at the timeout, as on the net/http path (ReverseProxy
// relays the 103, the timeout cancels the round trip, the error handler
// answers 504).
func TestFastBehaviourUpstreamTimeoutAfterEarlyHints(t *testing.T) {
	stop := make(chan struct{})
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
		<-stop // and no final answer
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(stop) }) }
	t.Cleanup(unblock) // before rawApp's cleanup waits for the app
	h := NewHandler(Options{UpstreamTimeout: 100 * time.Millisecond})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)
	t.Cleanup(unblock) // and before fbServer's waits for the fast path

	c, br := fbDial(t, addr)
	c.SetReadDeadline(time.Now().Add(time.Second))
	start := time.Now()
	io.WriteString(c, fbGet("/"))
	hints, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the 103: %v", err)
	}
	if hints.StatusCode != http.StatusEarlyHints {
		t.Errorf("first head: %d; want 103", hints.StatusCode)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no final answer %s after the request (UpstreamTimeout 100ms): %v; want 504", time.Since(start).Round(time.Millisecond), err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusGatewayTimeout || string(b) != "504 Gateway Timeout: the app did not answer in time\n" {
		t.Errorf("final answer %d %q; want 504 \"504 Gateway Timeout: the app did not answer in time\\n\"", resp.StatusCode, b)
	}
	fbServedFast(t, fs, 1)
}

// fbObserver records what an Observer is told, copying the request's
// fields at once (the fast path reuses its Request).
type fbObserver struct {
	mu       sync.Mutex
	done     []fbObserved
	errKinds []string
}

type fbObserved struct {
	u                                 *Upstream
	method, path, host, proto, remote string
	status                            int
}

func (o *fbObserver) RequestDone(u *Upstream, r RequestInfo, status int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.done = append(o.done, fbObserved{u, r.Method, r.Path, r.Host, r.Proto, r.RemoteAddr, status})
}

func (o *fbObserver) UpstreamError(_ *Upstream, kind string, _ bool) {
	o.mu.Lock()
	o.errKinds = append(o.errKinds, kind)
	o.mu.Unlock()
}

func (o *fbObserver) requests() []fbObserved {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]fbObserved(nil), o.done...)
}

// 13. The Observer hears of a fast-path request as it would of one served
// by net/http: method, decoded path, Host, protocol, status, upstream.
func TestFastBehaviourObserver(t *testing.T) {
	_, u := app(t, "blue")
	var obs fbObserver
	h := NewHandler(Options{Observer: &obs})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	resp, body := fbRoundTrip(t, c, br, "GET /a%20b?x=1 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
	if resp.StatusCode != 200 || body != "blue" {
		t.Fatalf("got %d %q; want 200 \"blue\"", resp.StatusCode, body)
	}
	waitFor(t, func() bool { return len(obs.requests()) > 0 })
	got := obs.requests()
	want := fbObserved{u, "GET", "/a b", "shop.example.com", "HTTP/1.1", c.LocalAddr().String(), 200}
	if len(got) != 1 || got[0] != want {
		t.Errorf("RequestDone calls: %+v; want one: %+v", got, want)
	}
	fbServedFast(t, fs, 1)
}

// fbHeaders sends a raw GET /headers with the extra header lines hdr to the
// app() app and returns what it saw.
func fbHeaders(t *testing.T, c net.Conn, br *bufio.Reader, hdr string) map[string]string {
	t.Helper()
	resp, body := fbRoundTrip(t, c, br, "GET /headers HTTP/1.1\r\nHost: shop.example.com\r\n"+hdr+"\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %q; want 200", resp.StatusCode, body)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return got
}

// 14. The forwarding headers the app sees, from a trusted proxy and from
// anyone else.
func TestFastBehaviourForwardingHeaders(t *testing.T) {
	const sent = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\nX-Real-Ip: 6.6.6.6\r\n"
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    map[string]string
	}{
		{"trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{
			"Host":              "shop.example.com",
			"X-Real-Ip":         "203.0.113.7",
			"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
			"X-Forwarded-Proto": "https",
			"X-Forwarded-Host":  "example.com",
		}},
		{"untrusted", nil, map[string]string{
			"Host":              "shop.example.com",
			"X-Real-Ip":         "127.0.0.1",
			"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
			"X-Forwarded-Proto": "http",
			"X-Forwarded-Host":  "shop.example.com",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, u := app(t, "blue")
			h := NewHandler(Options{TrustedProxies: tc.trusted})
			h.Route(u)
			fs, addr := fbServer(t, h, nil)
			c, br := fbDial(t, addr)
			got := fbHeaders(t, c, br, sent)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q; want %q", k, got[k], v)
				}
			}
			fbServedFast(t, fs, 1)
		})
	}
}

// 15. While a canary split is active, requests are Fallback's (it sets the
// sticky cookie), and the split sends them to the canary.
func TestFastBehaviourCanarySplitHandsOff(t *testing.T) {
	_, blue := app(t, "blue")
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(blue)
	s, err := NewSplit(SplitConfig{Canary: green, Percent: 100})
	if err != nil {
		t.Fatal(err)
	}
	h.SetSplit(s)
	fs, addr := fbServer(t, h, nil)

	c, br := fbDial(t, addr)
	resp, body := fbRoundTrip(t, c, br, fbGet("/"))
	if resp.StatusCode != 200 || body != "green" {
		t.Errorf("got %d %q; want 200 \"green\" (the canary takes 100%%)", resp.StatusCode, body)
	}
	if n, f := fs.handedOff.Load(), fs.servedFast.Load(); n != 1 || f != 0 {
		t.Errorf("handedOff = %d, servedFast = %d; want 1 and 0 (a split is Fallback's)", n, f)
	}
	if green.Served() != 1 || blue.Served() != 0 {
		t.Errorf("served: green %d, blue %d; want 1 and 0", green.Served(), blue.Served())
	}
}

// A client that hangs up while the app is still working cancels the app's
// request (its connection to the app is cut, so a Go app's request context
// ends) and stops counting in flight, as on the net/http path; the
// Observer hears "canceled".
func TestFastBehaviourClientHangsUp(t *testing.T) {
	canceled := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(5 * time.Second):
			io.WriteString(w, "too late")
		}
	}))
	t.Cleanup(slow.Close)
	u, err := NewUpstream("blue", slow.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	obs := &fbObserver{}
	h := NewHandler(Options{Observer: obs})
	h.Route(u)
	_, addr := fbServer(t, h, nil)

	c, _ := fbDial(t, addr)
	io.WriteString(c, fbGet("/long-poll"))
	waitFor(t, func() bool { return u.InFlight() == 1 })
	start := time.Now()
	c.Close()
	select {
	case <-canceled:
	case <-time.After(3 * time.Second):
		t.Fatal("the app's request was not canceled 3 s after its client hung up")
	}
	waitFor(t, func() bool { return u.InFlight() == 0 })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancel took %s; want about %s", took, watchAfter)
	}
	waitFor(t, func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return slices.Contains(obs.errKinds, "canceled")
	})
}

// A client that pipelines its next request while the first waits on a
// slow app: the byte the hang-up watch reads is not lost.
func TestFastBehaviourWatchKeepsPipelinedByte(t *testing.T) {
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(3 * watchAfter)
		}
		io.WriteString(w, r.Method+" "+r.URL.Path) // a lost first byte shows as method "ET"
	}))
	t.Cleanup(a.Close)
	u, err := NewUpstream("blue", a.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{})
	h.Route(u)
	fs, addr := fbServer(t, h, nil)
	c, br := fbDial(t, addr)
	io.WriteString(c, fbGet("/slow"))
	time.Sleep(2 * watchAfter) // the watch is reading the client by now
	io.WriteString(c, fbGet("/next"))
	for _, want := range []string{"GET /slow", "GET /next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	fbServedFast(t, fs, 2)
}
