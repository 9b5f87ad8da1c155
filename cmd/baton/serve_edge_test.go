package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/edge"
	"github.com/batonproxy/baton/internal/pebbletest"
	"github.com/batonproxy/baton/internal/testlog"
)

// edgeApp is a test app for the edge tests. Every request is recorded. Its
// routes: /health (200), /ws (a raw upgrade that echoes lines prefixed with
// the app's name), /sse (an event stream the test drives through sse), and
// everything else answers "<name> <path>" and the X-Real-Ip it got.
type edgeApp struct {
	name string
	srv  *httptest.Server
	sse  chan string // each value is sent as an event; close ends the stream

	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	Method, Path, ContentLength, TransferEncoding, Body string
}

func newEdgeApp(t *testing.T, name string) *edgeApp {
	t.Helper()
	a := &edgeApp{name: name, sse: make(chan string)}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serveHTTP))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *edgeApp) addr() string { return a.srv.Listener.Addr().String() }

func (a *edgeApp) requests() []seenRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

func (a *edgeApp) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path != "/health" {
		a.mu.Lock()
		a.seen = append(a.seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("Content-Length"),
			strings.Join(r.TransferEncoding, ","), string(body)})
		a.mu.Unlock()
	}
	switch r.URL.Path {
	case "/health":
		io.WriteString(w, "ok")
	case "/ws":
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(a.name + ": " + line)
			brw.Flush()
		}
	case "/drip":
		// Five chunks, 300ms apart: a slow download.
		for i := range 5 {
			if i > 0 {
				time.Sleep(300 * time.Millisecond)
			}
			fmt.Fprintf(w, "chunk %d\n", i)
			http.NewResponseController(w).Flush()
		}
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		for {
			select {
			case ev, ok := <-a.sse:
				if !ok {
					return
				}
				fmt.Fprintf(w, "data: %s %s\n\n", a.name, ev)
				http.NewResponseController(w).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default:
		w.Header().Set("X-Seen-Real-Ip", r.Header.Get("X-Real-Ip"))
		w.Header().Set("X-Seen-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"))
		for k := range r.Header {
			if strings.Contains(k, "_") {
				w.Header().Add("X-Seen-Underscored", k)
			}
		}
		fmt.Fprintf(w, "%s %s", a.name, r.URL.Path)
	}
}

// runningBaton is 'baton serve' running in the test process.
type runningBaton struct {
	lns  *edge.Listeners
	stop func()
}

// startServe runs serve with the given command-line flags (plus blue,
// green, loopback listeners on free ports and a temporary state directory)
// until the test ends.
func startServe(t *testing.T, blue, green *edgeApp, args ...string) *runningBaton {
	t.Helper()
	return startServeArgs(t, append([]string{"--blue", blue.addr(), "--green", green.addr(),
		"--no-stop", "--health-passes", "1", "--health-interval", "20ms"}, args...)...)
}

// startServeArgs runs serve with the given flags, plus loopback listeners
// on free ports and a temporary state directory (unless args name one).
func startServeArgs(t *testing.T, args ...string) *runningBaton {
	t.Helper()
	base := []string{"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--shutdown-grace", "2s"}
	if !slices.Contains(args, "--state-dir") {
		base = append(base, "--state-dir", t.TempDir())
	}
	all := append(base, args...)
	if (slices.Contains(args, "--tls-cert") || slices.Contains(args, "--domain")) && !slices.Contains(args, "--https") {
		all = append(all, "--https", "127.0.0.1:0")
	}
	var cfg serveConfig
	fs := newFlagSet("serve", serveSynopsis, io.Discard)
	cfg.flags(fs)
	if err := parseFlags(fs, all); err != nil {
		t.Fatalf("flags %q: %v", all, err)
	}
	file, err := loadConfigFile(fs, &cfg)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("flags %q: %v", all, err)
	}
	services, err := serviceConfigs(all, &cfg, file)
	if err != nil {
		t.Fatalf("services %q: %v", all, err)
	}
	cfg.Edge.certPoll = 10 * time.Millisecond
	cfg.Upgrade.inProcess = true
	lnc := make(chan *edge.Listeners, 1)
	cfg.Edge.onListen = func(lns *edge.Listeners) { lnc <- lns }

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, all, topLevel(fs), services, "", testlog.New(t)) }()
	var b runningBaton
	select {
	case b.lns = <-lnc:
	case err := <-done:
		cancel()
		t.Fatalf("serve returned before listening: %v", err)
	}
	var once sync.Once
	b.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(b.stop)
	return &b
}

func (b *runningBaton) httpURL() string  { return "http://" + b.lns.HTTP.Addr().String() }
func (b *runningBaton) httpsURL() string { return "https://" + b.lns.HTTPS.Addr().String() }
func (b *runningBaton) adminURL() string { return "http://" + b.lns.Admin.Addr().String() }

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key into dir and returns their paths and a pool that trusts it.
func writeSelfSigned(t *testing.T, dir, cn string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	certPath, keyPath, cert := writeCert(t, dir, cn, "localhost", "127.0.0.1")
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// TestServeTLSCertRedirect runs 'baton serve --tls-cert': HTTPS (HTTP/2)
// reaches the app with X-Forwarded-Proto https, port 80 redirects to it
// keeping the path and query, and ACME challenge paths are not redirected
// but proxied (so an ACME client of the operator's can answer them).
func TestServeTLSCertRedirect(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	certPath, keyPath, pool := writeSelfSigned(t, t.TempDir(), "baton")
	b := startServe(t, blue, green, "--tls-cert", certPath, "--tls-key", keyPath)

	client := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(b.httpsURL() + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || !strings.HasSuffix(string(body), " /hello") {
		t.Errorf("HTTPS GET /hello = %s %q; want HTTP/2.0 and the app's answer", resp.Proto, body)
	}
	if got := resp.Header.Get("X-Seen-Forwarded-Proto"); got != "https" {
		t.Errorf("app saw X-Forwarded-Proto %q; want https", got)
	}

	// WebSocket over TLS: clients open an HTTP/1.1 connection for it (ALPN
	// http/1.1), since baton does not offer extended CONNECT on HTTP/2.
	ws, err := tls.Dial("tcp", b.lns.HTTPS.Addr().String(), &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(ws, "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	wsr := bufio.NewReader(ws)
	if resp, err := http.ReadResponse(wsr, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket upgrade over TLS: %v, %v", resp, err)
	}
	io.WriteString(ws, "hi\n")
	if line, err := wsr.ReadString('\n'); err != nil || !strings.HasSuffix(line, ": hi\n") {
		t.Errorf("WebSocket over TLS echoed %q, %v; want the app's echo of hi", line, err)
	}

	for _, tc := range []struct {
		method, path string
		code         int
		location     string
	}{
		{"GET", "/shop/cart?id=7", 301, b.httpsURL() + "/shop/cart?id=7"},
		{"POST", "/form", 308, b.httpsURL() + "/form"},
		{"GET", "/.well-known/acme-challenge/abc123", 200, ""},
	} {
		req, _ := http.NewRequest(tc.method, b.httpURL()+tc.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s http://...%s = %d Location %q; want %d %q", tc.method, tc.path, resp.StatusCode,
				resp.Header.Get("Location"), tc.code, tc.location)
		}
		if tc.code == 200 && !strings.HasSuffix(string(body), " "+tc.path) {
			t.Errorf("challenge path answered %q; want it proxied to the app", body)
		}
	}
}

// TestServeTrustedProxies checks --trusted-proxies end to end: the peer
// (127.0.0.1) is trusted, so X-Real-IP is the client in X-Forwarded-For.
func TestServeTrustedProxies(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	for _, tc := range []struct {
		flags []string
		want  string
	}{
		{nil, "127.0.0.1"},
		{[]string{"--trusted-proxies", "10.0.0.0/8,127.0.0.1"}, "203.0.113.9"},
	} {
		b := startServe(t, blue, green, tc.flags...)
		req, _ := http.NewRequest("GET", b.httpURL()+"/ip", nil)
		req.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.1.2.3")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Seen-Real-Ip"); got != tc.want {
			t.Errorf("flags %q: app saw X-Real-Ip %q; want %q", tc.flags, got, tc.want)
		}
		b.stop()
	}
}

// rawExchange sends raw bytes on a new connection to addr and returns the
// first response (nil if the connection closed without one) and whether the
// connection was then closed by baton within a second.
func rawExchange(t *testing.T, addr, raw string) (resp *http.Response, body string, closed bool) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", true
	}
	b, _ := io.ReadAll(resp.Body)
	conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	return resp, string(b), err == io.EOF || isReset(err)
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// TestServeRequestRules checks the request rules of issue 13 and their
// flags end to end, with and without the fast path: header names with "_"
// are dropped unless --underscores-in-headers, TRACE is refused unless
// --allow-trace, and HTTP/1.0 with Transfer-Encoding gets 400 and a closed
// connection whatever the flags.
func TestServeRequestRules(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	for _, tc := range []struct {
		args        []string
		underscores bool
		trace       bool
	}{
		{nil, false, false},
		{[]string{"--fast-path=false"}, false, false},
		{[]string{"--underscores-in-headers", "--allow-trace"}, true, true},
		{[]string{"--fast-path=false", "--underscores-in-headers", "--allow-trace"}, true, true},
	} {
		t.Run(strings.Join(append([]string{"flags"}, tc.args...), " "), func(t *testing.T) {
			b := startServe(t, blue, green, append([]string{"--http-only"}, tc.args...)...)
			addr := b.lns.HTTP.Addr().String()

			resp, _, _ := rawExchange(t, addr, "GET /u HTTP/1.1\r\nHost: x\r\nX_Real_IP: 6.6.6.6\r\n\r\n")
			if resp == nil {
				t.Fatal("no answer to a GET")
			}
			if got := resp.Header.Get("X-Seen-Underscored"); (got != "") != tc.underscores {
				t.Errorf("app saw underscored header %q; want it only with --underscores-in-headers", got)
			}

			resp, body, _ := rawExchange(t, addr, "TRACE /t HTTP/1.1\r\nHost: x\r\n\r\n")
			switch {
			case resp == nil:
				t.Error("no answer to a TRACE")
			case tc.trace && resp.StatusCode != http.StatusOK, !tc.trace && resp.StatusCode != http.StatusMethodNotAllowed:
				t.Errorf("TRACE: %d %q; want 405 unless --allow-trace", resp.StatusCode, body)
			}

			resp, body, closed := rawExchange(t, addr, "POST /te HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"+
				"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
			if resp == nil || resp.StatusCode != http.StatusBadRequest || !closed {
				st := 0
				if resp != nil {
					st = resp.StatusCode
				}
				t.Errorf("HTTP/1.0 with Transfer-Encoding: %d %q, closed %v; want 400 and closed", st, body, closed)
			}
			for _, r := range append(blue.requests(), green.requests()...) {
				if r.Path == "/te" || r.Path == "/smuggled" {
					t.Errorf("app got %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

// TestServeHostileInput throws malformed requests, request-smuggling
// attempts, oversized headers and a slowloris client at the public port of a
// real 'baton serve' over raw TCP, while a steady load of normal requests
// must see no failure at all.
func TestServeHostileInput(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	const readHeaderTimeout = 500 * time.Millisecond
	b := startServe(t, blue, green, "--http-only", "--max-header-bytes", "4k",
		"--read-header-timeout", readHeaderTimeout.String(), "--max-body-size", "1k")
	addr := b.lns.HTTP.Addr().String()

	var ok, failed atomic.Int64
	var firstFailure atomic.Value
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for i := 0; loadCtx.Err() == nil; i++ {
				resp, err := client.Get(fmt.Sprintf("http://%s/normal/%d/%d", addr, w, i))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}

	for _, tc := range []struct {
		name, raw string
		// wantStatus is the status baton must answer with (0: any 4xx).
		wantStatus int
	}{
		{"malformed request line", "GARBAGE\r\n\r\n", 400},
		{"bad HTTP version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 505},
		{"space before colon", "GET /evil HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", 400},
		{"control byte in header", "GET /evil HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"two Content-Lengths", "POST /evil HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
		{"missing Host", "GET /evil HTTP/1.1\r\n\r\n", 400},
		{"oversized headers", "GET /evil HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431},
		{"unknown transfer coding", "POST /evil HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: xchunked\r\n\r\nabc", 501},
		{"body over --max-body-size", "POST /evil HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("a", 2000), 413},
		{"HTTP/1.0 with Transfer-Encoding and Content-Length", "POST /evil HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n" +
			"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"HTTP/0.9 request line (answered before --read-header-timeout)", "GET /evil\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, closed := rawExchange(t, addr, tc.raw)
			if resp == nil {
				t.Fatalf("no response; want %d", tc.wantStatus)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status %d (%q); want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if !closed {
				t.Errorf("connection left open after a %d", resp.StatusCode)
			}
		})
	}

	// CL.TE and TE.CL smuggling: baton frames the request by
	// Transfer-Encoding alone, forwards it to the app with a single framing,
	// answers, and closes the connection so that what a Content-Length
	// reader would take for a second request is never read.
	for _, tc := range []struct{ name, raw string }{
		{"CL.TE", "POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"TE.CL", "POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"1\r\nA\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, closed := rawExchange(t, addr, tc.raw)
			if resp == nil {
				t.Fatal("no response")
			}
			if resp.StatusCode >= 500 || (resp.StatusCode < 400 && !closed) {
				t.Errorf("status %d, closed %v; want a 4xx, or an answer and the connection closed", resp.StatusCode, closed)
			}
		})
	}

	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			io.Copy(io.Discard, conn) // returns when baton closes the connection
			closed <- time.Since(start)
		}()
		io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: x\r\n")
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case d := <-closed:
				if d < readHeaderTimeout-50*time.Millisecond || d > readHeaderTimeout+2*time.Second {
					t.Errorf("slowloris connection closed after %s; want about %s", d, readHeaderTimeout)
				}
				return
			case <-tick.C:
				// One header line every 100ms: never done, never idle.
				io.WriteString(conn, fmt.Sprintf("X-Slow-%d: a\r\n", i))
			case <-time.After(5 * time.Second):
				t.Fatal("slowloris connection still open after 5s")
			}
		}
	})

	// The timeouts that stop slowloris must not cut slow but legitimate
	// transfers: a download and an upload each taking three times
	// --read-header-timeout.
	t.Run("slow download and upload", func(t *testing.T) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + addr + "/drip")
			if err != nil {
				t.Errorf("slow download: %v", err)
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || strings.Count(string(b), "chunk") != 5 {
				t.Errorf("slow download got %q, %v; want 5 chunks", b, err)
			}
		}()
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			go func() {
				for i := range 5 {
					if i > 0 {
						time.Sleep(300 * time.Millisecond)
					}
					fmt.Fprintf(pw, "part%d,", i)
				}
				pw.Close()
			}()
			resp, err := http.Post("http://"+addr+"/upload", "text/plain", pr)
			if err != nil {
				t.Errorf("slow upload: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("slow upload: status %d", resp.StatusCode)
			}
		}()
		wg.Wait()
		var got string
		for _, r := range blue.requests() {
			if r.Path == "/upload" {
				got = r.Body
			}
		}
		if got != "part0,part1,part2,part3,part4," {
			t.Errorf("app got upload %q; want all five parts", got)
		}
	})

	stopLoad()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("normal load: %d of %d requests failed during the attacks; first: %v", n, n+ok.Load(), firstFailure.Load())
	}
	if ok.Load() < 20 {
		t.Errorf("normal load: only %d requests succeeded; the load did not run", ok.Load())
	}
	for _, r := range blue.requests() {
		if r.Path == "/evil" || r.Path == "/smuggled" || r.Path == "/slow" {
			t.Errorf("app received %s %s; want it stopped at the edge", r.Method, r.Path)
		}
		if r.Path == "/smuggle" && (r.ContentLength != "" || r.TransferEncoding != "chunked") {
			t.Errorf("app received /smuggle with Content-Length %q, Transfer-Encoding %q; want chunked only",
				r.ContentLength, r.TransferEncoding)
		}
	}
}

// TestServeStreamsSurviveSwitch opens a WebSocket and an SSE stream through
// baton, switches to the other colour with the admin API, and checks that
// both streams keep working on the old colour after the swap while new
// requests go to the new one; the switch's drain finishes when they close.
func TestServeStreamsSurviveSwitch(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	b := startServe(t, blue, green, "--http-only", "--drain-timeout", "30s")
	apps := map[string]*edgeApp{"blue": blue, "green": green}

	live := func() string {
		t.Helper()
		resp, err := http.Get(b.httpURL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		name, _, _ := strings.Cut(string(body), " ")
		return name
	}
	from := live()
	to := map[string]string{"blue": "green", "green": "blue"}[from]

	// WebSocket: a raw upgrade, then a line protocol the app echoes.
	ws, err := net.Dial("tcp", b.lns.HTTP.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(ws, "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	wsr := bufio.NewReader(ws)
	resp, err := http.ReadResponse(wsr, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	echo := func(msg string) string {
		t.Helper()
		io.WriteString(ws, msg+"\n")
		line, err := wsr.ReadString('\n')
		if err != nil {
			t.Fatalf("websocket echo of %q: %v", msg, err)
		}
		return strings.TrimSpace(line)
	}
	if got, want := echo("before"), from+": before"; got != want {
		t.Fatalf("websocket echo = %q; want %q", got, want)
	}

	// SSE: events the test releases one by one through the app.
	sseResp, err := http.Get(b.httpURL() + "/sse")
	if err != nil {
		t.Fatal(err)
	}
	defer sseResp.Body.Close()
	sser := bufio.NewReader(sseResp.Body)
	event := func(ev string) string {
		t.Helper()
		apps[from].sse <- ev
		for {
			line, err := sser.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE stream broke waiting for %q: %v", ev, err)
			}
			if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
				return d
			}
		}
	}
	if got, want := event("1"), from+" 1"; got != want {
		t.Fatalf("SSE event = %q; want %q", got, want)
	}

	// Switch; it swaps the route, then waits in its drain for our streams.
	switched := make(chan []string, 1)
	go func() {
		resp, err := http.Post(b.adminURL()+"/v1/switch", "application/json", strings.NewReader(`{"to":"`+to+`"}`))
		if err != nil {
			switched <- []string{"error: " + err.Error()}
			return
		}
		defer resp.Body.Close()
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		switched <- lines
	}()
	deadline := time.Now().Add(10 * time.Second)
	for live() != to {
		if time.Now().After(deadline) {
			t.Fatal("the route did not move to " + to + " within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// After the swap, the streams opened before it still work, on the old
	// colour, while the switch is draining.
	for i := range 3 {
		msg := fmt.Sprintf("after-%d", i)
		if got, want := echo(msg), from+": "+msg; got != want {
			t.Errorf("websocket after the swap: %q; want %q", got, want)
		}
		if got, want := event(msg), from+" "+msg; got != want {
			t.Errorf("SSE after the swap: %q; want %q", got, want)
		}
	}
	select {
	case lines := <-switched:
		t.Fatalf("switch finished while streams were open on the old colour: %q", lines)
	default:
	}

	// End both; the SSE stream ends cleanly, and the drain completes.
	close(apps[from].sse)
	if rest, err := io.ReadAll(sser); err != nil {
		t.Errorf("SSE stream did not end cleanly: %v (after %q)", err, rest)
	}
	ws.Close()
	var lines []string
	select {
	case lines = <-switched:
	case <-time.After(20 * time.Second):
		t.Fatal("switch did not finish 20s after the streams closed")
	}
	var last struct {
		OK     *bool `json:"ok"`
		Result *struct {
			Drained   int    `json:"drained"`
			Abandoned int    `json:"abandoned"`
			To        string `json:"to"`
		} `json:"result"`
	}
	if len(lines) > 0 {
		json.Unmarshal([]byte(lines[len(lines)-1]), &last)
	}
	if last.OK == nil || !*last.OK || last.Result == nil || last.Result.Drained < 2 || last.Result.Abandoned != 0 || last.Result.To != to {
		t.Errorf("switch result: %q; want ok, both streams drained, none abandoned, to %s", lines, to)
	}
}

// TestServeACMEWithPebble runs 'baton serve --domain' against Pebble, a real
// ACME server validating on baton's own ports, and checks that an HTTPS
// request over HTTP/2 reaches the app with a certificate chaining to
// Pebble's root, stored under <state-dir>/certmagic. edge.TestACMEWithPebble
// covers each challenge type; this covers the flags and wiring.
func TestServeACMEWithPebble(t *testing.T) {
	const domain = "shop.baton.test"
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	// Pebble must know baton's ports before baton knows Pebble's URL.
	peb, httpPort, tlsPort := pebbletest.StartForBaton(t)
	ports := []int{httpPort, tlsPort}
	rootFile := filepath.Join(t.TempDir(), "pebble-api-root.pem")
	if err := os.WriteFile(rootFile, peb.APIRootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	b := startServe(t, blue, green, "--http", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--https", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--state-dir", stateDir, "--domain", domain, "--acme-ca", peb.DirectoryURL, "--acme-ca-root", rootFile,
		"--acme-email", "ops@baton.test")

	roots, _ := peb.IssuerRoots(t)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, b.lns.HTTPS.Addr().String())
		},
	}}
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; {
		if resp, err = client.Get("https://" + domain + "/store"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s from pebble within 60s; last error: %v", domain, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || !strings.HasSuffix(string(body), " /store") {
		t.Errorf("GET https://%s/store = %s %q; want HTTP/2.0 and the app's answer", domain, resp.Proto, body)
	}
	if got := resp.TLS.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{domain}) {
		t.Errorf("certificate names %q; want [%s]", got, domain)
	}
	matches, _ := filepath.Glob(filepath.Join(stateDir, "certmagic", "certificates", "*", domain, domain+".crt"))
	if len(matches) == 0 {
		t.Errorf("no certificate stored under %s", filepath.Join(stateDir, "certmagic"))
	}
}

func TestServeEdgeFlags(t *testing.T) {
	parse := func(args ...string) (serveConfig, error) {
		var cfg serveConfig
		fs := newFlagSet("serve", serveSynopsis, io.Discard)
		cfg.flags(fs)
		if err := parseFlags(fs, args); err != nil {
			return cfg, err
		}
		return cfg, cfg.validate()
	}
	for _, tc := range []struct {
		args []string
		want string // part of the error; "" for none
	}{
		{nil, ""},
		{[]string{"--http-only"}, ""},
		{[]string{"--domain", "a.example,b.example", "--acme-email", "x@a.example"}, ""},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--https", ":8443"}, ""},
		{[]string{"--trusted-proxies", "10.0.0.0/8", "--trusted-proxies", "192.0.2.1", "--max-body-size", "10m"}, ""},
		{[]string{"--http-only", "--domain", "a.example"}, "--http-only cannot be combined"},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--domain", "a.example"}, ""}, // ACME's names, and the file for any other
		{[]string{"--acme", "--acme-email", "x@a.example"}, ""},
		{[]string{"--tls-cert", "c.pem"}, "go together"},
		{[]string{"--https", ":8443"}, "--https needs --domain, --acme or --tls-cert"},
		{[]string{"--acme-email", "x@a.example"}, "--acme-email needs --domain or --acme"},
		{[]string{"--domain", "a.example", "--acme-ca", "http://ca.example/dir"}, "want an https://"},
		{[]string{"--domain", "a.example", "--https", ":80"}, "--https and --http are both :80"},
		{[]string{"--trusted-proxies", "10.0.0.0/33"}, "--trusted-proxies"},
		{[]string{"--max-body-size", "ten"}, "size \"ten\""},
		{[]string{"--max-header-bytes", "0"}, "--max-header-bytes 0"},
		{[]string{"--read-header-timeout", "0s"}, "--read-header-timeout 0s"},
	} {
		cfg, err := parse(tc.args...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v; want no error", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v; want one with %q", tc.args, err, tc.want)
		}
		if tc.want == "" && len(tc.args) > 0 && tc.args[0] == "--domain" {
			if got := cfg.Edge.httpsAddr(); got != ":443" {
				t.Errorf("%q: HTTPS address %q; want :443", tc.args, got)
			}
			if !slices.Equal(cfg.Edge.Domains, []string{"a.example", "b.example"}) {
				t.Errorf("%q: domains %q", tc.args, cfg.Edge.Domains)
			}
		}
	}
}
