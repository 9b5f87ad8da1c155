package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fast path's contract is that, for every request, a client and the app
// see what they would see through net/http's server and ReverseProxy. These
// tests hold it to that: the same raw requests go through a FastServer and
// through a plain http.Server with the same Handler, to an app that echoes
// what it received, and the answers are compared. Each case also says
// whether the fast path itself must serve it, or hand it to Fallback.

// echoRequest is what echoApp saw.
type echoRequest struct {
	Method, RequestURI, Path, Host, Proto string
	Header                                http.Header
	Body                                  string
}

// echoApp answers with a JSON echoRequest. The query steers the answer:
// status=N, hdr=Name:Value (repeatable), connhdr=Name (a Connection header
// naming Name, and Name set), flush=1 (answer chunked, in two parts),
// nobody=1 (no body).
func echoApp(t *testing.T) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := r.URL.Query()
		for _, h := range q["hdr"] {
			k, v, _ := strings.Cut(h, ":")
			w.Header().Add(k, v)
		}
		if n := q.Get("connhdr"); n != "" {
			w.Header().Set("Connection", n)
			w.Header().Set(n, "must not reach the client")
			w.Header().Set("Keep-Alive", "timeout=5")
		}
		w.Header().Set("Content-Type", "application/json")
		status := http.StatusOK
		if s := q.Get("status"); s != "" {
			fmt.Sscan(s, &status)
		}
		w.WriteHeader(status)
		if q.Get("nobody") != "" || status == http.StatusNoContent || status == http.StatusNotModified {
			return
		}
		out, _ := json.Marshal(echoRequest{Method: r.Method, RequestURI: r.RequestURI, Path: r.URL.Path, Host: r.Host,
			Proto: r.Proto, Header: r.Header, Body: string(body)})
		if q.Get("flush") != "" {
			half := len(out) / 2
			w.Write(out[:half])
			w.(http.Flusher).Flush()
			out = out[half:]
		}
		w.Write(out)
	}))
	t.Cleanup(app.Close)
	return app
}

// frontEnds starts, around one app, a FastServer (with a Fallback like
// baton's) and a plain http.Server, each with its own Handler.
func frontEnds(t *testing.T, appAddr string, opts Options) (fast *FastServer, fastAddr, refAddr string) {
	t.Helper()
	start := func(h *Handler) {
		u, err := NewUpstream("blue", appAddr)
		if err != nil {
			t.Fatal(err)
		}
		h.Route(u)
		t.Cleanup(u.CloseIdleConnections)
	}
	fh := NewHandler(opts)
	start(fh)
	fb := &http.Server{Handler: fh, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
	fast = &FastServer{Router: SingleRoute(fh), Fallback: fb}
	fln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fast.Serve(fln)
	t.Cleanup(func() { fln.Close(); fb.Close(); fast.Close() })

	rh := NewHandler(opts)
	start(rh)
	ref := &http.Server{Handler: rh, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ref.Serve(ScreenListener(rln, ref.MaxHeaderBytes)) // as baton serve does without the fast path
	t.Cleanup(func() { ref.Close() })
	return fast, fln.Addr().String(), rln.Addr().String()
}

// exchange writes raw to a new connection to addr and reads up to n
// answers, fewer if the connection ends. (Not a half-close after writing:
// net/http takes that for a client that went away.)
func exchange(t *testing.T, addr, raw string, method string, n int) ([]*http.Response, []string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var resps []*http.Response
	var bodies []string
	for len(resps) < n {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
				t.Fatalf("reading answer %d: %v", len(resps)+1, err)
			}
			return resps, bodies
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			b = append(b, "<broken: "+err.Error()+">"...)
		}
		resps = append(resps, resp)
		bodies = append(bodies, string(b))
	}
	return resps, bodies
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// normalize returns what must agree between the two front ends: status,
// the answer's headers (minus the ones each server makes up itself), and
// the body, with the echoed request decoded so that header order and
// framing headers the two transports legitimately write differently do
// not count.
func normalize(resp *http.Response, body string) string {
	h := resp.Header.Clone()
	h.Del("Date")
	h.Del("Content-Length") // framing: compared through the body
	var er echoRequest
	if resp.Header.Get("Content-Type") == "application/json" && json.Unmarshal([]byte(body), &er) == nil {
		if er.Header.Get("Content-Length") == "0" {
			er.Header.Del("Content-Length") // net/http omits a zero length on GET
		}
		b, _ := json.Marshal(er)
		body = string(b)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d close=%v\n", resp.StatusCode, resp.Close)
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s: %q\n", k, h[k])
	}
	sb.WriteString(body)
	return sb.String()
}

func TestFastPathMatchesNetHTTP(t *testing.T) {
	app := echoApp(t)
	appAddr := app.Listener.Addr().String()
	bigBody := strings.Repeat("x", 100<<10)
	bigHeader := strings.Repeat("a", 6<<10)
	cases := []struct {
		name   string
		raw    string
		method string // of the last request, for reading its answer
		fast   uint64 // requests the fast path must serve itself
		handed uint64 // connections it must hand to Fallback
	}{
		{"GET", "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n", "GET", 1, 0},
		{"query and escapes", "GET /a%20b/c%2Fd?x=1&y=%41+b HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET", 1, 0},
		{"HEAD", "HEAD /?hdr=X-A:1 HTTP/1.1\r\nHost: h\r\n\r\n", "HEAD", 1, 0},
		{"POST small body", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", "POST", 1, 0},
		{"POST 100 KiB body", "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 102400\r\n\r\n" + bigBody, "POST", 1, 0},
		{"PUT empty body", "PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "PUT", 1, 0},
		{"header case and repeats", "GET / HTTP/1.1\r\nhost: h\r\nx-custom: 1\r\nX-CUSTOM: 2\r\nAccept:  spaced  \r\n\r\n", "GET", 1, 0},
		{"client forwarding headers", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n" +
			"X-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\nForwarded: for=6.6.6.6\r\n\r\n", "GET", 1, 0},
		{"hop-by-hop request headers", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nKeep-Alive: 300\r\nProxy-Connection: x\r\n" +
			"Proxy-Authorization: Basic eDp5\r\nTrailer: X-T\r\n\r\n", "GET", 1, 0},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "GET", 1, 0},
		{"hop-by-hop answer headers", "GET /?connhdr=X-Secret HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 0},
		{"chunked answer", "GET /?flush=1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 0},
		{"204", "GET /?status=204 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 0},
		{"304", "GET /?status=304 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 0},
		{"500 from app", "GET /?status=500 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 0},
		{"pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 3, 0},
		{"header names with _ (dropped)", "GET / HTTP/1.1\r\nHost: h\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_Proto: https\r\n\r\n", "GET", 1, 0},
		{"TRACE (405)", "TRACE / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 2, 0},
		{"pipelined, then one for net/http", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 1, 1},

		// Left to net/http: answers must still agree.
		{"chunked request", "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "POST", 0, 1},
		{"smuggling: CL and TE", "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "POST", 0, 1},
		{"two Content-Lengths", "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "POST", 0, 1},
		{"Expect 100-continue", "POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab", "POST", 0, 1},
		{"upgrade", "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "GET", 0, 1},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"HTTP/1.0 with TE and CL (400)", "POST / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" +
			"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"HTTP/0.9 (400)", "GET /\r\n", "GET", 0, 1},
		{"absolute target", "GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "OPTIONS", 0, 1},
		{"no Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", "GET", 0, 1},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET", 0, 1},
		{"bad escape in path", "GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"space before colon", "GET / HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n", "GET", 0, 1},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  2\r\n\r\n", "GET", 0, 1},
		{"control byte in value", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\x012\r\n\r\n", "GET", 0, 1},
		{"bare LF lines", "GET / HTTP/1.1\nHost: h\n\n", "GET", 0, 1},
		{"head larger than the first buffer", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + bigHeader + "\r\n\r\n", "GET", 1, 0},
		{"large head, then small ones, pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\nCookie: " + bigHeader + "\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n" +
			"POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", "POST", 3, 0},
		{"head over the fast path's 16 KiB, within net/http's limit", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("b", 18<<10) + "\r\n\r\n", "GET", 0, 1},
		{"head over MaxHeaderBytes", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat(bigHeader, 4) + "\r\n\r\n", "GET", 0, 1},
		{"unknown version", "GET / HTTP/1.9\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"bad escape in query", "GET /?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 0, 1},
		{"semicolon in query", "GET /?a=1;b=2 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fast, fastAddr, refAddr := frontEnds(t, appAddr, Options{})
			n := max(strings.Count(tc.raw, " HTTP/1."), 1) // requests in it (an HTTP/0.9 line counts too)
			got, gotBodies := exchange(t, fastAddr, tc.raw, tc.method, n)
			want, wantBodies := exchange(t, refAddr, tc.raw, tc.method, n)
			if len(got) != len(want) {
				t.Fatalf("%d answers through the fast path, %d through net/http", len(got), len(want))
			}
			if len(want) == 0 {
				t.Fatal("no answer at all: the case tests nothing")
			}
			for i := range got {
				g, w := normalize(got[i], gotBodies[i]), normalize(want[i], wantBodies[i])
				if g != w {
					t.Errorf("answer %d differs\nfast path:\n%s\nnet/http:\n%s", i+1, g, w)
				}
			}
			if n := fast.servedFast.Load(); n != tc.fast {
				t.Errorf("fast path served %d requests, want %d", n, tc.fast)
			}
			if n := fast.handedOff.Load(); n != tc.handed {
				t.Errorf("fast path handed %d connections to net/http, want %d", n, tc.handed)
			}
		})
	}
}

// TestFastPathHeadersReachApp pins what the app receives for a plain GET,
// independently of the net/http path.
func TestFastPathHeadersReachApp(t *testing.T) {
	app := echoApp(t)
	_, fastAddr, _ := frontEnds(t, app.Listener.Addr().String(), Options{})
	resps, bodies := exchange(t, fastAddr, "GET /x?q=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 198.51.100.1\r\nX-Real-Ip: 6.6.6.6\r\n\r\n", "GET", 1)
	if len(resps) != 1 || resps[0].StatusCode != 200 {
		t.Fatalf("answers %v", resps)
	}
	var er echoRequest
	if err := json.Unmarshal([]byte(bodies[0]), &er); err != nil {
		t.Fatal(err)
	}
	want := http.Header{
		"X-Forwarded-For":   {"198.51.100.1, 127.0.0.1"},
		"X-Forwarded-Host":  {"shop.example"},
		"X-Forwarded-Proto": {"http"},
		"X-Real-Ip":         {"127.0.0.1"},
	}
	if !reflect.DeepEqual(er.Header, want) || er.Host != "shop.example" || er.RequestURI != "/x?q=1" || er.Proto != "HTTP/1.1" {
		t.Errorf("app saw %+v, want headers %v, Host shop.example, URI /x?q=1", er, want)
	}
}

// FuzzParseRequest checks the fast path's promise: a head it accepts is one
// net/http accepts too, with the same method, target, Host and body length.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST /p?x=1 HTTP/1.1\r\nHost: h:80\r\nContent-Length: 12\r\nConnection: keep-alive, close\r\n\r\n",
		"GET /a%20b HTTP/1.1\r\nHost: [::1]:8080\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nX: \x80\xff\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, bareLF := endOfHead(b)
		if n < 0 || bareLF {
			return
		}
		var rh reqHead
		if parseRequest(b[:n], &rh) != nil {
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:n])))
		if err != nil {
			t.Fatalf("fast path took %q; net/http refuses it: %v", b[:n], err)
		}
		if req.Method != string(rh.method) || req.RequestURI != string(rh.target) || req.Host != string(rh.host) {
			t.Fatalf("fast path read %q %q host %q; net/http %q %q host %q", rh.method, rh.target, rh.host, req.Method, req.RequestURI, req.Host)
		}
		if req.ContentLength != rh.contentLength || len(req.TransferEncoding) != 0 {
			t.Fatalf("fast path: body of %d bytes; net/http: %d, transfer encoding %v", rh.contentLength, req.ContentLength, req.TransferEncoding)
		}
		if req.Close != rh.close {
			t.Fatalf("fast path: close=%v; net/http: %v", rh.close, req.Close)
		}
	})
}
