package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests in this file cover the edge rules of issue 13 (what a hostile
// client or a broken app found). Each runs against both front ends, the
// fast path and net/http, through frontEnds.

// bothFrontEnds returns the two front ends of frontEnds by name.
func bothFrontEnds(t *testing.T, appAddr string, opts Options) (*FastServer, map[string]string) {
	t.Helper()
	fast, fastAddr, refAddr := frontEnds(t, appAddr, opts)
	return fast, map[string]string{"fast path": fastAddr, "net/http": refAddr}
}

// Issue 13, item 2: a header name with "_" is dropped, as nginx does
// (underscores_in_headers off): an app server that maps "-" and "_" to the
// same name (CGI, WSGI, Rack) would read X_Real_IP as X-Real-IP.
func TestUnderscoreHeaderNamesDropped(t *testing.T) {
	app := echoApp(t)
	const raw = "GET / HTTP/1.1\r\nHost: h\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nX-Ok: 1\r\n\r\n"
	for _, keep := range []bool{false, true} {
		_, fronts := bothFrontEnds(t, app.Listener.Addr().String(), Options{UnderscoresInHeaders: keep})
		for name, addr := range fronts {
			t.Run(fmt.Sprintf("%s, UnderscoresInHeaders=%v", name, keep), func(t *testing.T) {
				resps, bodies := exchange(t, addr, raw, "GET", 1)
				if len(resps) != 1 || resps[0].StatusCode != 200 {
					t.Fatalf("answers %v; want one 200", resps)
				}
				var er echoRequest
				if err := json.Unmarshal([]byte(bodies[0]), &er); err != nil {
					t.Fatal(err)
				}
				var underscored []string
				for k := range er.Header {
					if strings.Contains(k, "_") {
						underscored = append(underscored, k)
					}
				}
				if keep && len(underscored) != 2 {
					t.Errorf("app got underscored headers %q; want X_Real_IP and X_Forwarded_Proto kept", underscored)
				}
				if !keep && len(underscored) != 0 {
					t.Errorf("app got underscored headers %q; want none", underscored)
				}
				if er.Header.Get("X-Ok") != "1" || er.Header.Get("X-Real-Ip") != "127.0.0.1" || er.Header.Get("X-Forwarded-Proto") != "http" {
					t.Errorf("app got X-Ok %q X-Real-Ip %q X-Forwarded-Proto %q; want 1, 127.0.0.1, http",
						er.Header.Get("X-Ok"), er.Header.Get("X-Real-Ip"), er.Header.Get("X-Forwarded-Proto"))
				}
			})
		}
	}
}

// wsgiApp is a WSGI app on python3's wsgiref server that answers with the
// HTTP_* keys of its environ as JSON.
const wsgiApp = `import json, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if k.startswith("HTTP_")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

httpd = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(httpd.server_port, flush=True)
httpd.serve_forever()
`

// startWSGI starts wsgiApp as a child process and returns its address; the
// process is killed by PID at cleanup.
func startWSGI(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test (apt-get install python3): %v", err)
	}
	script := filepath.Join(t.TempDir(), "app.py")
	if err := os.WriteFile(script, []byte(wsgiApp), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		port <- strings.TrimSpace(line)
	}()
	select {
	case p := <-port:
		if p == "" {
			t.Fatal("the WSGI app did not print its port")
		}
		return "127.0.0.1:" + p
	case <-time.After(10 * time.Second):
		t.Fatal("the WSGI app did not start within 10s")
	}
	return ""
}

// The issue's own reproduction: a WSGI app reads X_Real_IP merged into
// HTTP_X_REAL_IP ("6.6.6.6,127.0.0.1") unless baton drops it.
func TestUnderscoreHeadersDoNotReachWSGI(t *testing.T) {
	addr := startWSGI(t)
	_, fronts := bothFrontEnds(t, addr, Options{})
	for name, front := range fronts {
		t.Run(name, func(t *testing.T) {
			resps, bodies := exchange(t, front, "GET / HTTP/1.1\r\nHost: h\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_Proto: https\r\n\r\n", "GET", 1)
			if len(resps) != 1 || resps[0].StatusCode != 200 {
				t.Fatalf("answers %v; want one 200", resps)
			}
			var env map[string]string
			if err := json.Unmarshal([]byte(bodies[0]), &env); err != nil {
				t.Fatalf("%v in %q", err, bodies[0])
			}
			if env["HTTP_X_REAL_IP"] != "127.0.0.1" || env["HTTP_X_FORWARDED_PROTO"] != "http" {
				t.Errorf("WSGI app read HTTP_X_REAL_IP=%q HTTP_X_FORWARDED_PROTO=%q; want 127.0.0.1 and http", env["HTTP_X_REAL_IP"], env["HTTP_X_FORWARDED_PROTO"])
			}
		})
	}
}

// Issue 13, item 4: a malformed chunked answer is cut off (the client's
// connection closed), and the malformed bytes never reach the client.
func TestMalformedChunkedAnswerIsCutOff(t *testing.T) {
	cases := []struct {
		name, body, bad string
		netHTTPCuts     bool // net/http re-chunks: an extension it drops ends nothing
	}{
		{"no CRLF after chunk data", "3\r\nabcXY0\r\n\r\n", "XY", true},
		{"CR in chunk extension", "3;a=\rb\r\nabc\r\n0\r\n\r\n", "\rb", true},
		{"control byte in chunk extension", "3;a=\x01b\r\nabc\r\n0\r\n\r\n", "\x01", false},
		{"CR in trailer", "3\r\nabc\r\n0\r\nX-T: a\rb\r\n\r\n", "a\rb", true},
		{"NUL in trailer", "3\r\nabc\r\n0\r\nX-T: a\x00b\r\n\r\n", "\x00", true},
	}
	for _, tc := range cases {
		u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
			for {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"+tc.body)
			}
		})
		_, fronts := bothFrontEnds(t, u.addr, Options{})
		for name, addr := range fronts {
			t.Run(tc.name+", "+name, func(t *testing.T) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				cuts := name == "fast path" || tc.netHTTPCuts
				wait := 3 * time.Second
				if !cuts {
					wait = 300 * time.Millisecond // long enough to see bytes that would come
				}
				c.SetDeadline(time.Now().Add(wait))
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
				got, err := io.ReadAll(c)
				var ne net.Error
				closed := !errors.As(err, &ne) || !ne.Timeout()
				if strings.Contains(string(got), tc.bad) {
					t.Errorf("client got the malformed bytes %q: %q", tc.bad, got)
				}
				if cuts && !closed {
					t.Errorf("connection still open after the malformed answer (got %q); want it cut off", got)
				}
			})
		}
	}
}

// Issue 13, item 5: an answer head over maxResponseHead (here one 2 MiB
// field) is a 502 on both paths; the net/http path used to relay it.
func TestHugeAnswerHeadIs502(t *testing.T) {
	big := strings.Repeat("a", 2<<20)
	u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+big+"\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	_, fronts := bothFrontEnds(t, u.addr, Options{})
	for name, addr := range fronts {
		t.Run(name, func(t *testing.T) {
			resps, bodies := exchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1)
			if len(resps) != 1 || resps[0].StatusCode != http.StatusBadGateway || bodies[0] != msgBadGateway+"\n" {
				if len(resps) == 1 {
					t.Fatalf("answer %d with a %d-byte head; want 502 %q", resps[0].StatusCode, len(resps[0].Header.Get("X-Big")), msgBadGateway)
				}
				t.Fatalf("%d answers; want one 502", len(resps))
			}
		})
	}
}

// Issue 13, item 6: a request line without a version (HTTP/0.9) gets its
// 400 at once on the fast path, not after the read-header timeout.
func TestHTTP09RequestLineAnsweredAtOnce(t *testing.T) {
	app := echoApp(t)
	fast, fronts := bothFrontEnds(t, app.Listener.Addr().String(), Options{})
	for name, addr := range fronts {
		t.Run(name, func(t *testing.T) {
			c, br := fbDial(t, addr)
			c.SetReadDeadline(time.Now().Add(time.Second)) // the front ends' read-header timeout is 5 s
			start := time.Now()
			io.WriteString(c, "GET /\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer after %v: %v; want a 400 at once", time.Since(start).Round(time.Millisecond), err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("answer %d; want 400", resp.StatusCode)
			}
		})
	}
	if n := fast.servedFast.Load(); n != 0 {
		t.Errorf("fast path served %d requests; want 0", n)
	}
}

// Issue 13, item 6: TRACE gets 405 and never reaches the app, unless
// Options.AllowTrace; the connection stays usable.
func TestTraceRefused(t *testing.T) {
	var traces atomic.Int32
	app := echoApp(t)
	countTrace := app.Config.Handler
	app.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodTrace {
			traces.Add(1)
		}
		countTrace.ServeHTTP(w, r)
	})
	for _, allow := range []bool{false, true} {
		_, fronts := bothFrontEnds(t, app.Listener.Addr().String(), Options{AllowTrace: allow})
		for name, addr := range fronts {
			t.Run(fmt.Sprintf("%s, AllowTrace=%v", name, allow), func(t *testing.T) {
				before := traces.Load()
				resps, bodies := exchange(t, addr, "TRACE / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 2)
				if len(resps) != 2 {
					t.Fatalf("%d answers; want 2 (the connection stays open after the TRACE)", len(resps))
				}
				reached := traces.Load() - before
				switch {
				case !allow && (resps[0].StatusCode != http.StatusMethodNotAllowed || reached != 0):
					t.Errorf("TRACE: %d %q, %d reached the app; want 405 and none", resps[0].StatusCode, bodies[0], reached)
				case allow && (resps[0].StatusCode != 200 || reached != 1):
					t.Errorf("TRACE with AllowTrace: %d, %d reached the app; want 200 and 1", resps[0].StatusCode, reached)
				}
				if resps[1].StatusCode != 200 {
					t.Errorf("GET after it: %d; want 200", resps[1].StatusCode)
				}
			})
		}
	}
}

// Issue 13, item 3: an HTTP/1.0 request with Transfer-Encoding (with or
// without Content-Length) gets 400 and its connection closed (RFC 9112
// §6.1), on both front ends, also after earlier requests on the same
// connection; nothing of it reaches the app. An HTTP/1.0 keep-alive
// request framed by Content-Length alone is served as before.
func TestHTTP10TransferEncodingRefused(t *testing.T) {
	var reached atomic.Int32
	app := echoApp(t)
	echo := app.Config.Handler
	app.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			reached.Add(1)
		}
		echo.ServeHTTP(w, r)
	})
	const (
		teCL     = "POST /x HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
		teOnly   = "POST /x HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		fastOK   = "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
		netOK    = "GET http://h/ok HTTP/1.1\r\nHost: h\r\n\r\n" // absolute form: net/http's, keep-alive
		http10OK = "POST /ok HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
	)
	cases := []struct {
		name   string
		raw    string
		status []int // answers, in order; the connection must end after the last
	}{
		{"TE and CL", teCL, []int{400}},
		{"TE only", teOnly, []int{400}},
		{"after a request on the fast path", fastOK + teCL, []int{200, 400}},
		{"after a request net/http served", netOK + teCL, []int{200, 400}},
		{"after an HTTP/1.0 POST framed by CL", http10OK + teCL, []int{200, 400}},
		{"HTTP/1.0 keep-alive with CL only", http10OK + fastOK, []int{200, 200}},
	}
	_, fronts := bothFrontEnds(t, app.Listener.Addr().String(), Options{})
	for _, tc := range cases {
		for name, addr := range fronts {
			t.Run(tc.name+", "+name, func(t *testing.T) {
				before := reached.Load()
				refused := tc.status[len(tc.status)-1] == 400
				n := len(tc.status)
				if refused {
					n++ // to see that none comes: the connection ends
				}
				resps, bodies := exchange(t, addr, tc.raw, "GET", n)
				var got []int
				for _, r := range resps {
					got = append(got, r.StatusCode)
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.status) {
					t.Fatalf("answers %v %q; want %v and the connection closed", got, bodies, tc.status)
				}
				if refused && !resps[len(resps)-1].Close {
					t.Errorf("the 400 does not say Connection: close")
				}
				if n := reached.Load() - before; n != 0 {
					t.Errorf("%d request(s) of it reached the app; want none", n)
				}
			})
		}
	}
}
