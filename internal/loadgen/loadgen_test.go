package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/sampleapp"
)

// newServer starts an httptest server on 127.0.0.1 with h, after letting
// configure adjust the http.Server, and returns its host:port.
func newServer(t *testing.T, h http.Handler, configure func(*http.Server)) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if configure != nil {
		configure(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// runFor runs cfg for d and returns the report.
func runFor(t *testing.T, cfg Config, d time.Duration) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	rep := Run(ctx, cfg)
	if rep.Err != nil {
		t.Fatalf("Run: %v", rep.Err)
	}
	t.Logf("summary:\n%s", rep.Summary())
	return rep
}

func TestRunRateKindsVersions(t *testing.T) {
	target := newServer(t, sampleapp.Handler("v1", ""), nil)
	rep := runFor(t, Config{
		Target:          target,
		Rate:            200,
		KeepAliveConns:  4,
		NewConnFraction: 0.15,
		SlowFraction:    0.1,
		SlowMin:         10 * time.Millisecond,
		SlowMax:         50 * time.Millisecond,
		PostFraction:    0.15,
	}, time.Second)

	if n := rep.Total(); n < 100 || n > 300 {
		t.Errorf("Total() = %d at rate 200 for 1s; want 100..300", n)
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("%d failures; want 0; first %+v", len(f), f[0])
	}
	kinds := map[string]int{}
	for _, r := range rep.Results {
		kinds[r.Kind]++
		if r.Version != "v1" {
			t.Errorf("result %+v: Version %q; want v1", r, r.Version)
		}
		if r.Kind == KindSlow && r.Duration < 10*time.Millisecond {
			t.Errorf("slow request took %v; want at least SlowMin 10ms", r.Duration)
		}
	}
	for _, k := range []string{KindKeepAlive, KindNewConn, KindSlow, KindPost} {
		if kinds[k] == 0 {
			t.Errorf("no %s requests in %v", k, kinds)
		}
	}
	first, ok := rep.FirstSeen("v1")
	if !ok || first.Before(rep.Start) || first.After(rep.End) {
		t.Errorf("FirstSeen(v1) = %v, %v; want a time within the run", first, ok)
	}
	if _, ok := rep.FirstSeen("v2"); ok {
		t.Errorf("FirstSeen(v2) found; want none")
	}
	if got := rep.Versions(); len(got) != 1 || got[0] != "v1" {
		t.Errorf("Versions() = %q; want [v1]", got)
	}
	// Keep-alive workers reuse their connections: far fewer dials than requests.
	if oneShots := kinds[KindNewConn] + kinds[KindSlow]; rep.Conns > oneShots+4 {
		t.Errorf("Conns = %d; want at most %d one-shot + 4 keep-alive", rep.Conns, oneShots)
	}
	if s := rep.Summary(); !strings.Contains(s, "version v1:") {
		t.Errorf("Summary lacks the version line:\n%s", s)
	}
}

func TestRunAsFastAsPossible(t *testing.T) {
	target := newServer(t, sampleapp.Handler("v1", ""), nil)
	rep := runFor(t, Config{Target: target, KeepAliveConns: 2}, 300*time.Millisecond)
	if n := rep.Total(); n < 50 {
		t.Errorf("Total() = %d in 300ms at rate 0; want at least 50", n)
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("%d failures; want 0; first %+v", len(f), f[0])
	}
	if rep.Skipped != 0 {
		t.Errorf("Skipped = %d at rate 0; want 0", rep.Skipped)
	}
}

// connKey carries a per-connection request counter through ConnContext.
type connKey struct{}

// TestKeepAliveFailureNotRetried is the reason this package exists: a
// server that drops a keep-alive connection instead of answering must show
// up as a failure, and the request must not be retried on a new connection.
func TestKeepAliveFailureNotRetried(t *testing.T) {
	const perConn = 3
	var seen, dropped atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		n := r.Context().Value(connKey{}).(*atomic.Int64).Add(1)
		if n > perConn {
			dropped.Add(1)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
			return
		}
		w.Header().Set("X-App-Version", "v1")
		fmt.Fprintln(w, "v1")
	})
	target := newServer(t, h, func(s *http.Server) {
		s.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, new(atomic.Int64))
		}
	})
	rep := runFor(t, Config{Target: target, Rate: 200, KeepAliveConns: 2}, 500*time.Millisecond)

	failures := rep.Failures()
	if len(failures) == 0 {
		t.Fatal("no failures; want one per dropped connection")
	}
	if got, want := int64(len(failures)), dropped.Load(); got != want {
		t.Errorf("%d failures; want %d (connections dropped)", got, want)
	}
	if got, want := int64(rep.Total()), seen.Load(); got != want {
		t.Errorf("Total() = %d but the server saw %d requests; a retry would make them differ", got, want)
	}
	for _, f := range failures {
		if c := f.FailureClass(); c != ClassEOF && c != ClassReset {
			t.Errorf("failure %+v: class %q; want eof or reset", f, c)
		}
		if !f.Reused {
			t.Errorf("failure %+v: Reused false; want true (the 4th request on a connection)", f)
		}
	}
	byKind := rep.FailuresByKind()
	if byKind[ClassEOF]+byKind[ClassReset] != len(failures) {
		t.Errorf("FailuresByKind() = %v; want all %d as eof or reset", byKind, len(failures))
	}
}

func TestConnectionCloseIsNotFailure(t *testing.T) {
	var newConns atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "close")
		w.Header().Set("X-App-Version", "v1")
		if r.Method == http.MethodPost {
			fmt.Fprintln(w, "v1", n)
			return
		}
		fmt.Fprintln(w, "v1")
	})
	target := newServer(t, h, func(s *http.Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				newConns.Add(1)
			}
		}
	})
	rep := runFor(t, Config{Target: target, Rate: 100, KeepAliveConns: 2, PostFraction: 0.3}, 300*time.Millisecond)

	if rep.Total() < 10 {
		t.Fatalf("Total() = %d; want at least 10", rep.Total())
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("%d failures; want 0 (Connection: close is not a failure); first %+v", len(f), f[0])
	}
	if rep.Conns != rep.Total() || newConns.Load() != int64(rep.Total()) {
		t.Errorf("Conns = %d, server saw %d connections; want one per request (%d)", rep.Conns, newConns.Load(), rep.Total())
	}
}

func TestPostBodyIntact(t *testing.T) {
	var mu sync.Mutex
	var lengths []int64
	app := sampleapp.Handler("v1", "")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			mu.Lock()
			lengths = append(lengths, r.ContentLength)
			mu.Unlock()
		}
		app.ServeHTTP(w, r)
	})
	target := newServer(t, h, nil)
	rep := runFor(t, Config{Target: target, Rate: 200, KeepAliveConns: 2, PostFraction: 1}, 300*time.Millisecond)

	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("%d failures; want 0 (sample app echoes the byte count); first %+v", len(f), f[0])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lengths) != rep.Total() || len(lengths) == 0 {
		t.Fatalf("server saw %d POSTs; want %d (> 0)", len(lengths), rep.Total())
	}
	for _, n := range lengths {
		if n < 1<<10 || n > 16<<10 {
			t.Errorf("Content-Length %d; want 1..16 KiB", n)
		}
	}
}

func TestPostWrongEchoIsFailure(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "v1 7") // whatever was sent
	})
	target := newServer(t, h, nil)
	rep := runFor(t, Config{Target: target, Rate: 100, PostFraction: 1}, 200*time.Millisecond)

	f := rep.Failures()
	if len(f) == 0 || len(f) != rep.Total() {
		t.Fatalf("%d failures of %d; want all", len(f), rep.Total())
	}
	if c := f[0].FailureClass(); c != ClassOther || !strings.Contains(f[0].Err, "server read 7") {
		t.Errorf("failure %+v: want class other mentioning the count", f[0])
	}
}

func TestFailureClasses(t *testing.T) {
	stall := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name   string
		target string
		path   string
		want   string
	}{
		{"5xx", newServer(t, sampleapp.Handler("v1", ""), nil), "/fail", ClassStatus5xx},
		{"4xx", newServer(t, http.NotFoundHandler(), nil), "/", ClassStatus4xx},
		{"timeout", newServer(t, stall, nil), "/", ClassTimeout},
		{"refused", closedAddr, "/", ClassRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := runFor(t, Config{Target: tt.target, Path: tt.path, Rate: 20, Timeout: 100 * time.Millisecond}, 150*time.Millisecond)
			if rep.Total() == 0 {
				t.Fatal("no requests")
			}
			byKind := rep.FailuresByKind()
			if byKind[tt.want] != rep.Total() || len(byKind) != 1 {
				t.Errorf("FailuresByKind() = %v; want all %d as %s", byKind, rep.Total(), tt.want)
			}
		})
	}
}

func TestInFlightOutlivesContext(t *testing.T) {
	target := newServer(t, sampleapp.Handler("v1", ""), nil)
	start := time.Now()
	rep := runFor(t, Config{
		Target: target, Rate: 20, SlowFraction: 1,
		SlowMin: 300 * time.Millisecond, SlowMax: 300 * time.Millisecond,
	}, 50*time.Millisecond)

	if rep.Total() == 0 {
		t.Fatal("no requests")
	}
	if f := rep.Failures(); len(f) > 0 {
		t.Errorf("%d failures; want 0 (cancelling Run's context must not cut requests); first %+v", len(f), f[0])
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Run returned after %v; want after the 300ms requests finished", d)
	}
	for _, r := range rep.Results {
		if r.Duration < 300*time.Millisecond {
			t.Errorf("slow request took %v; want at least 300ms", r.Duration)
		}
	}
}

func TestRunInvalidConfig(t *testing.T) {
	rep := Run(context.Background(), Config{
		Rate: -1, NewConnFraction: 0.6, SlowFraction: 0.6, Path: "x",
		SlowMin: time.Second, SlowMax: time.Millisecond,
	})
	if rep.Err == nil {
		t.Fatal("Err = nil; want the config problems")
	}
	for _, want := range []string{"target is empty", "rate -1", "add up to", `path "x"`, "slow max"} {
		if !strings.Contains(rep.Err.Error(), want) {
			t.Errorf("Err = %q; want it to mention %q", rep.Err, want)
		}
	}
	if rep.Total() != 0 || !strings.Contains(rep.Summary(), "invalid config") {
		t.Errorf("Total() = %d, Summary %q; want 0 and the error", rep.Total(), rep.Summary())
	}
}

func TestAppendHead(t *testing.T) {
	cfg := Config{Target: "127.0.0.1:1", Host: "app.test", Path: "/p"}.withDefaults()
	tests := []struct {
		j         job
		connClose bool
		want      string
	}{
		{job{kind: KindKeepAlive}, false, "GET /p HTTP/1.1\r\nHost: app.test\r\nUser-Agent: baton-loadgen\r\n\r\n"},
		{job{kind: KindNewConn}, true, "GET /p HTTP/1.1\r\nHost: app.test\r\nUser-Agent: baton-loadgen\r\nConnection: close\r\n\r\n"},
		{job{kind: KindSlow, slow: 1500 * time.Millisecond}, true, "GET /slow?ms=1500 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: baton-loadgen\r\nConnection: close\r\n\r\n"},
		{job{kind: KindPost, size: 2048}, false, "POST /echo HTTP/1.1\r\nHost: app.test\r\nUser-Agent: baton-loadgen\r\nContent-Type: application/octet-stream\r\nContent-Length: 2048\r\n\r\n"},
	}
	for _, tt := range tests {
		if got := string(appendHead(nil, &cfg, tt.j, tt.connClose)); got != tt.want {
			t.Errorf("appendHead(%+v) = %q; want %q", tt.j, got, tt.want)
		}
	}
}
