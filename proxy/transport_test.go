package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests in this file pin down what baton's own upstream transport must
// keep from http.Transport; handler_test.go covers the proxy's behaviour as a
// whole.

// rawApp serves each accepted connection with serve, on its own goroutine,
// and returns an Upstream for it.
func rawApp(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *Upstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	u, err := NewUpstream("blue", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.CloseIdleConnections) // before the wait above: the app's goroutines are in pooled connections
	return u
}

// readRequest reads one request and its body from br.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(req.Body)
	return req, b, err
}

func do(t *testing.T, fe *httptest.Server, method, path string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, fe.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := fe.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// TestPooledConnectionClosedByAppIsNotUsed: an app that closes keep-alive
// connections after each answer (without saying so) must not cost a POST its
// answer; http.Transport noticed the close from its read loop, baton's
// transport peeks before reusing.
func TestPooledConnectionClosedByAppIsNotUsed(t *testing.T) {
	var conns atomic.Int32
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		_, body, err := readRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+2, "ok"+string(body))
		// and close, as an app whose idle timeout fired would
	})
	h := NewHandler(Options{RetryTimeout: -1})
	h.Route(u)
	fe := frontend(t, h)
	for i := range 5 {
		if code, body := do(t, fe, "POST", "/echo", strings.NewReader(fmt.Sprint(i))); code != 200 || body != fmt.Sprint("ok", i) {
			t.Fatalf("request %d: %d %q; want 200 %q", i, code, body, fmt.Sprint("ok", i))
		}
		waitFor(t, func() bool { return conns.Load() == int32(i+1) })
		time.Sleep(5 * time.Millisecond) // let the FIN arrive
	}
}

// TestAppClosingReusedConnectionBeforeAnswer covers the race the peek cannot
// see: the app takes the request on a reused connection and closes it without
// a byte of answer. A GET is sent again on a fresh connection; a POST whose
// body went out is not (it may have been acted on) and becomes a 502.
func TestAppClosingReusedConnectionBeforeAnswer(t *testing.T) {
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for n := 0; ; n++ {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if n == 1 {
				return // second request on this connection: hang up
			}
			fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := NewHandler(Options{RetryTimeout: -1})
	h.Route(u)
	fe := frontend(t, h)

	if code, _ := do(t, fe, "GET", "/", nil); code != 200 {
		t.Fatalf("first GET: %d; want 200", code)
	}
	if code, body := do(t, fe, "GET", "/", nil); code != 200 || body != "ok" {
		t.Fatalf("GET on a connection the app hangs up: %d %q; want it retried to 200 \"ok\"", code, body)
	}
	// The retry's connection is now the pooled one, and has served one.
	if code, _ := do(t, fe, "POST", "/", strings.NewReader("x")); code != http.StatusBadGateway {
		t.Fatalf("POST on a connection the app hangs up: %d; want 502 (not retried)", code)
	}
	if n := u.InFlight(); n != 0 {
		t.Errorf("in flight = %d; want 0", n)
	}
}

// TestChunkedRequestBody: a body of unknown length goes to the app chunked,
// whole, and as it arrives. (Request trailers are not forwarded, with any
// transport: ReverseProxy clones the request before the client sends them.)
func TestChunkedRequestBody(t *testing.T) {
	got := make(chan string, 1)
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, body, err := readRequest(br)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- fmt.Sprintf("%v %s", req.TransferEncoding, body)
		fmt.Fprint(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", fe.URL+"/up", pr)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	pw.Write([]byte("one,"))
	pw.Write([]byte("two,"))
	pw.Write([]byte("three"))
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g, want := <-got, "[chunked] one,two,three"; g != want {
		t.Errorf("app got %q; want %q", g, want)
	}
}

// TestStreamingRequestBodyIsNotHeldBack: each piece of a body of unknown
// length reaches the app before the client sends the next.
func TestStreamingRequestBodyIsNotHeldBack(t *testing.T) {
	pieces := make(chan string)
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				pieces <- string(buf[:n])
			}
			if err != nil {
				break
			}
		}
		close(pieces)
		fmt.Fprint(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", fe.URL+"/stream", pr)
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for _, s := range []string{"a", "b", "c"} {
		pw.Write([]byte(s))
		select {
		case p := <-pieces:
			if p != s {
				t.Fatalf("app got %q; want %q", p, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("piece %q did not reach the app while the client waited", s)
		}
	}
	pw.Close()
	for range pieces {
	}
}

func TestResponseTrailersForwarded(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		fmt.Fprint(w, "body")
		w.Header().Set("X-Checksum", "abc")
	}))
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)
	resp, err := http.Get(fe.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("body %q trailer %v; want \"body\" and X-Checksum abc", b, resp.Trailer)
	}
}

func TestEarlyHintsForwarded(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		fmt.Fprint(w, "page")
	}))
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", hdr.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", fe.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "103 </style.css>; rel=preload"; len(hints) != 1 || hints[0] != want || string(b) != "page" {
		t.Errorf("1xx %q body %q; want [%q] and \"page\"", hints, b, want)
	}
}

// TestAnswersWithoutBodyKeepConnection: HEAD, 204 and 304 answers carry no
// body; the connection goes back to the pool at once and stays usable.
func TestAnswersWithoutBodyKeepConnection(t *testing.T) {
	var conns atomic.Int32
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	backend.Start()
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{{"HEAD", "/", 200, ""}, {"GET", "/204", 204, ""}, {"GET", "/304", 304, ""}, {"GET", "/", 200, "hello"}, {"HEAD", "/", 200, ""}} {
		if code, body := do(t, fe, tc.method, tc.path, nil); code != tc.code || body != tc.body {
			t.Errorf("%s %s: %d %q; want %d %q", tc.method, tc.path, code, body, tc.code, tc.body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("app saw %d connections; want 1 (one kept alive throughout)", n)
	}
	if n := u.InFlight(); n != 0 {
		t.Errorf("in flight = %d; want 0", n)
	}
}

func TestCloseDelimitedResponse(t *testing.T) {
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		fmt.Fprint(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)
	for range 2 {
		if code, body := do(t, fe, "GET", "/", nil); code != 200 || body != "until the end" {
			t.Fatalf("got %d %q; want 200 \"until the end\"", code, body)
		}
	}
}

// TestClientGoneAbortsUpstreamRequest: a client that goes away while the app
// is still thinking frees the in-flight slot and the app's request.
func TestClientGoneAbortsUpstreamRequest(t *testing.T) {
	appCanceled, appStarted := make(chan struct{}), make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(appStarted)
		select {
		case <-r.Context().Done():
			close(appCanceled)
		case <-time.After(10 * time.Second):
		}
	}))
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", fe.URL, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	// Not the in-flight count: a request cancelled before the app read it
	// never reaches its handler, and the test would wait for nothing.
	select {
	case <-appStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the app within 5s")
	}
	cancel()
	<-errc
	select {
	case <-appCanceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the app's request was not aborted after the client left")
	}
	waitFor(t, func() bool { return u.InFlight() == 0 })
}

// TestEarlyAnswerToUpload: an app that refuses an upload without reading it
// must not hang the proxy; the client gets the app's answer or an error, and
// nothing stays in flight.
func TestEarlyAnswerToUpload(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too big", http.StatusRequestEntityTooLarge)
	}))
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	body := make([]byte, 8<<20)
	rand.Read(body)
	req, _ := http.NewRequest("POST", fe.URL+"/upload", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %d; want 413 (or 502 if the app's reset won the race)", resp.StatusCode)
		}
	}
	waitFor(t, func() bool { return u.InFlight() == 0 })
}

// TestExpectContinueNotForwarded: the front server answers the client's
// "Expect: 100-continue" itself; the app gets the body without the header.
func TestExpectContinueNotForwarded(t *testing.T) {
	got := make(chan string, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- fmt.Sprintf("expect=%q body=%s", r.Header.Get("Expect"), b)
	}))
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	conn, err := net.Dial("tcp", fe.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprint(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue first; got %q, %v", line, err)
	}
	br.ReadString('\n')
	fmt.Fprint(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("answer: %v %v", resp, err)
	}
	if g, want := <-got, `expect="" body=hello`; g != want {
		t.Errorf("app got %s; want %s", g, want)
	}
}

func TestRequestURIKeptExactly(t *testing.T) {
	got := make(chan string, 4)
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			got <- req.RequestURI
			fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)
	for _, uri := range []string{"/a%2Fb/c%20d?x=1&y=%2F", "/?", "/plain", "/q?a=b&c=%3B&d"} {
		conn, err := net.Dial("tcp", fe.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", uri)
		io.Copy(io.Discard, conn)
		conn.Close()
		if g := <-got; g != uri {
			t.Errorf("app got %q; want %q", g, uri)
		}
	}
}

// TestIdleConnectionsPrunedAndClosed: pooled connections go after the idle
// timeout without traffic, and CloseIdleConnections closes them at once.
func TestIdleConnectionsPrunedAndClosed(t *testing.T) {
	var open atomic.Int32
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	backend.Start()
	defer backend.Close()
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	u.transport.idleTimeout = 50 * time.Millisecond
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)

	do(t, fe, "GET", "/", nil)
	waitFor(t, func() bool { return open.Load() == 1 })
	waitFor(t, func() bool { return open.Load() == 0 }) // pruned
	u.transport.mu.Lock()
	n := len(u.transport.idle)
	u.transport.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections still pooled after the idle timeout", n)
	}

	u.transport.idleTimeout = time.Minute
	do(t, fe, "GET", "/", nil)
	waitFor(t, func() bool { return open.Load() == 1 })
	u.CloseIdleConnections()
	waitFor(t, func() bool { return open.Load() == 0 })
	if code, _ := do(t, fe, "GET", "/", nil); code != 200 {
		t.Errorf("after CloseIdleConnections: %d; want 200 on a new connection", code)
	}
}
