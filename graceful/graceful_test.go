package graceful

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func serve(t *testing.T, h http.Handler) (*Drainer, *http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := New()
	srv := &http.Server{Handler: h}
	d.Attach(srv)
	go srv.Serve(d.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return d, srv, ln.Addr().String()
}

// TestBusyKeepAliveClientsSeeNoFailure: clients hammering keep-alive
// connections during a drain get clean answers (the last one with
// Connection: close), and the drain ends once they have left.
func TestBusyKeepAliveClientsSeeNoFailure(t *testing.T) {
	d, _, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	var failures, closes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// DisableKeepAlives off, and no retries hiding failures: a
			// fresh Transport per client, one connection.
			tr := &http.Transport{MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+addr, nil)
				resp, err := c.Do(req)
				if err != nil {
					// After the drain the listener is gone: a refused
					// dial is expected then, a reset is not.
					if d.Draining() && isRefused(err) {
						return
					}
					failures.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close {
					closes.Add(1)
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Drain(ctx, time.Second, nil); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d clients saw a failed request during the drain", failures.Load())
	}
	if closes.Load() == 0 {
		t.Fatal("no client was told Connection: close")
	}
	if d.Open() != 0 {
		t.Fatalf("%d connections open after Drain", d.Open())
	}
}

func isRefused(err error) bool {
	var op *net.OpError
	for e := err; e != nil; {
		if o, ok := e.(*net.OpError); ok {
			op = o
			break
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return op != nil && op.Op == "dial"
}

func TestIdleConnectionIsClosedAfterIdleClose(t *testing.T) {
	d, _, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	buf := make([]byte, 512)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Drain(ctx, 200*time.Millisecond, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("idle connection closed after %s; want it left alone for ~200ms", took)
	}
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("idle connection still open after Drain")
	}
}

func TestDrainWaitsForBusy(t *testing.T) {
	d, _, _ := serve(t, http.NotFoundHandler())
	var busy atomic.Int64
	busy.Store(1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		busy.Store(0)
	}()
	start := time.Now()
	if err := d.Drain(context.Background(), 0, busy.Load); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 90*time.Millisecond {
		t.Fatal("Drain returned while busy() was not 0")
	}
}

func TestDrainDeadline(t *testing.T) {
	d, _, _ := serve(t, http.NotFoundHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Drain(ctx, 0, func() int64 { return 1 }); err != context.DeadlineExceeded {
		t.Fatalf("Drain = %v; want deadline exceeded", err)
	}
}
