package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The benchmarks measure the hot path over real loopback sockets: a raw
// keep-alive HTTP/1.1 client (so the client adds almost nothing to allocs/op)
// → optionally the Handler behind an http.Server → an http.Server app. The
// "Direct" variants hit the app without the proxy; the difference between a
// pair is what the proxy costs. allocs/op counts the whole process (client,
// proxy and app).
//
//	go test -run '^$' -bench . -benchmem ./proxy/

var (
	benchSmall = []byte("hello, world\n")
	benchBig   = bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16) // 64 KiB
)

// benchApp is an http.Server app: "/" answers benchSmall, "/big" benchBig,
// "/echo" reads the body and answers its length.
func benchApp(b *testing.B) string {
	b.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(len(benchBig)))
			w.Write(benchBig)
		case "/echo":
			n, _ := io.Copy(io.Discard, r.Body)
			w.Write(strconv.AppendInt(nil, n, 10))
		default:
			w.Header().Set("Content-Type", "text/plain")
			w.Write(benchSmall)
		}
	}))
	b.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// mode is what the benchmark client talks to.
type mode int

const (
	direct       mode = iota // the app itself
	handler                  // a Handler routed to the app
	observed                 // the same with an Observer, as baton serve runs it
	fast                     // the Handler behind a FastServer, as baton serve runs plain HTTP
	fastObserved             // the same with an Observer
	fastServices             // a FastServer routing among 100 services (50 hosts with a catch-all and an /admin service each), the request's host among them
)

// nopObserver is the cheapest Observer: what remains is the Handler's own
// cost of observing.
type nopObserver struct{}

func (nopObserver) RequestDone(*Upstream, RequestInfo, int, time.Duration) {}
func (nopObserver) UpstreamError(*Upstream, string, bool)                  {}

// benchTarget returns the address the client talks to.
func benchTarget(b *testing.B, m mode) string {
	b.Helper()
	app := benchApp(b)
	if m == direct {
		return app
	}
	u, err := NewUpstream("blue", app)
	if err != nil {
		b.Fatal(err)
	}
	var opts Options
	if m == observed || m == fastObserved {
		opts.Observer = nopObserver{}
	}
	h := NewHandler(opts)
	h.Route(u)
	b.Cleanup(u.CloseIdleConnections)
	if m == fast || m == fastObserved || m == fastServices {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		rt := SingleRoute(h)
		if m == fastServices {
			routes := benchTable(b, 49).Routes()
			all := []Route{{Service: "bench", Hosts: []string{"bench.example"}, Handler: h},
				{Service: "bench-admin", Hosts: []string{"bench.example"}, PathPrefix: "/admin", Handler: NewHandler(Options{})}}
			for _, r := range routes {
				all = append(all, *r)
			}
			rt = NewRouter(mustTable(b, all...), nil, nil)
		}
		fb := &http.Server{Handler: rt}
		fs := &FastServer{Router: rt, Fallback: fb}
		go fs.Serve(ln)
		b.Cleanup(func() { ln.Close(); fb.Close(); fs.Close() })
		return ln.Addr().String()
	}
	fe := httptest.NewServer(h)
	b.Cleanup(fe.Close)
	return fe.Listener.Addr().String()
}

// rawClient is one keep-alive connection that sends a fixed request and
// reads a Content-Length or chunked answer without allocating.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte // request body sent after req, if any
}

func newRawClient(b *testing.B, addr, method, path string, body []byte) *rawClient {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	req := fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\n", method, path)
	if body != nil {
		req = fmt.Appendf(req, "Content-Length: %d\r\n", len(body))
	}
	req = append(req, "\r\n"...)
	return &rawClient{conn: conn, br: bufio.NewReaderSize(conn, 16<<10), req: req, body: body}
}

func (c *rawClient) do() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	if c.body != nil {
		if _, err := c.conn.Write(c.body); err != nil {
			return err
		}
	}
	n, chunked := -1, false
	status := true
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if status {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return fmt.Errorf("status line %q", line)
			}
			status = false
			continue
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok {
			v = bytes.TrimSpace(v)
			switch {
			case bytes.EqualFold(k, []byte("Content-Length")):
				n, _ = strconv.Atoi(string(v))
			case bytes.EqualFold(k, []byte("Transfer-Encoding")):
				chunked = true
			}
		}
	}
	if !chunked {
		if n < 0 {
			return fmt.Errorf("no Content-Length")
		}
		_, err := c.br.Discard(n)
		return err
	}
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil {
			return err
		}
		if _, err := c.br.Discard(int(size) + 2); err != nil {
			return err
		}
		if size == 0 {
			return nil
		}
	}
}

func benchSerial(b *testing.B, m mode, method, path string, body []byte) {
	c := newRawClient(b, benchTarget(b, m), method, path, body)
	defer c.conn.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.do(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchParallel runs 64 clients (many more than GOMAXPROCS, as a public proxy
// sees), each with its own keep-alive connection.
func benchParallel(b *testing.B, m mode, method, path string, body []byte) {
	addr := benchTarget(b, m)
	var mu sync.Mutex
	var clients []*rawClient
	b.Cleanup(func() {
		for _, c := range clients {
			c.conn.Close()
		}
	})
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := newRawClient(b, addr, method, path, body)
		mu.Lock()
		clients = append(clients, c)
		mu.Unlock()
		for pb.Next() {
			if err := c.do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkSmallGET(b *testing.B) {
	b.Run("direct", func(b *testing.B) { benchSerial(b, direct, "GET", "/", nil) })
	b.Run("handler", func(b *testing.B) { benchSerial(b, handler, "GET", "/", nil) })
	b.Run("observed", func(b *testing.B) { benchSerial(b, observed, "GET", "/", nil) })
	b.Run("fast", func(b *testing.B) { benchSerial(b, fast, "GET", "/", nil) })
	b.Run("fast-observed", func(b *testing.B) { benchSerial(b, fastObserved, "GET", "/", nil) })
	b.Run("fast-100-services", func(b *testing.B) { benchSerial(b, fastServices, "GET", "/", nil) })
}

func BenchmarkSmallGETParallel(b *testing.B) {
	b.Run("direct", func(b *testing.B) { benchParallel(b, direct, "GET", "/", nil) })
	b.Run("handler", func(b *testing.B) { benchParallel(b, handler, "GET", "/", nil) })
	b.Run("observed", func(b *testing.B) { benchParallel(b, observed, "GET", "/", nil) })
	b.Run("fast", func(b *testing.B) { benchParallel(b, fast, "GET", "/", nil) })
}

func BenchmarkBigGET(b *testing.B) {
	for _, m := range []struct {
		name string
		m    mode
	}{{"direct", direct}, {"handler", handler}, {"fast", fast}} {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchBig)))
			benchSerial(b, m.m, "GET", "/big", nil)
		})
	}
}

func BenchmarkPOST(b *testing.B) {
	for _, m := range []struct {
		name string
		m    mode
	}{{"direct", direct}, {"handler", handler}, {"fast", fast}} {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchBig)))
			benchSerial(b, m.m, "POST", "/echo", benchBig)
		})
	}
}
