package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// app starts an httptest server that answers with its name and echoes
// what it received, so tests can see which upstream answered.
func app(t *testing.T, name string) (*httptest.Server, *Upstream) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", name)
		switch r.URL.Path {
		case "/headers":
			h := map[string]string{"Host": r.Host, "RemoteAddr": r.RemoteAddr}
			for k := range r.Header {
				h[k] = strings.Join(r.Header.Values(k), "|")
			}
			_ = json.NewEncoder(w).Encode(h)
		case "/slow":
			d, _ := time.ParseDuration(r.URL.Query().Get("d"))
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
			fmt.Fprint(w, name)
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s", name, b)
		default:
			fmt.Fprint(w, name)
		}
	}))
	t.Cleanup(srv.Close)
	u, err := NewUpstream(name, srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return srv, u
}

func frontend(t *testing.T, h *Handler) *httptest.Server {
	t.Helper()
	fe := httptest.NewServer(h)
	t.Cleanup(fe.Close)
	return fe
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHeadersLikeNginx(t *testing.T) {
	_, blue := app(t, "blue")
	h := NewHandler(Options{})
	h.Route(blue)
	fe := frontend(t, h)

	_, body := get(t, fe.URL+"/headers", map[string]string{
		"Host":            "shop.example.com",
		"X-Forwarded-For": "203.0.113.7",
		"X-Real-Ip":       "6.6.6.6", // forged: must be replaced
	})
	var got map[string]string
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	want := map[string]string{
		"Host":              "shop.example.com",
		"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Real-Ip":         "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "shop.example.com",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q", k, got[k], v)
		}
	}
}

func TestRouteTakesEffectOnNextRequest(t *testing.T) {
	_, blue := app(t, "blue")
	_, green := app(t, "green")
	h := NewHandler(Options{})
	if prev := h.Route(blue); prev != nil {
		t.Fatalf("first Route returned %v; want nil", prev.Name())
	}
	fe := frontend(t, h)
	if _, body := get(t, fe.URL, nil); body != "blue" {
		t.Fatalf("before swap got %q; want blue", body)
	}
	if prev := h.Route(green); prev != blue {
		t.Fatalf("Route returned %v; want blue", prev)
	}
	// The client reuses its keep-alive connection: the swap must not need
	// a new one.
	for range 5 {
		if _, body := get(t, fe.URL, nil); body != "green" {
			t.Fatalf("after swap got %q; want green", body)
		}
	}
	if blue.Served() != 1 || green.Served() != 5 {
		t.Errorf("served blue=%d green=%d; want 1 and 5", blue.Served(), green.Served())
	}
}

func TestInFlightCountsUntilBodyDoneAndDrains(t *testing.T) {
	_, blue := app(t, "blue")
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(blue)
	fe := frontend(t, h)

	done := make(chan string)
	go func() {
		resp, err := http.Get(fe.URL + "/slow?d=300ms")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	waitFor(t, func() bool { return blue.InFlight() == 1 })
	h.Route(green)
	if _, body := get(t, fe.URL, nil); body != "green" {
		t.Fatalf("new request went to %q; want green", body)
	}
	if n := blue.InFlight(); n != 1 {
		t.Fatalf("blue in flight after swap = %d; want 1 (the slow request)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := blue.WaitIdle(ctx, time.Millisecond); err != nil {
		t.Fatalf("WaitIdle: %v", err)
	}
	if got := <-done; got != "blue" {
		t.Fatalf("slow request answered %q; want blue (it started there)", got)
	}
	if green.InFlight() != 0 {
		t.Errorf("green in flight = %d; want 0", green.InFlight())
	}
}

func TestWaitIdleHonoursDeadline(t *testing.T) {
	_, blue := app(t, "blue")
	h := NewHandler(Options{})
	h.Route(blue)
	fe := frontend(t, h)
	go func() {
		resp, err := http.Get(fe.URL + "/slow?d=2s")
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, func() bool { return blue.InFlight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := blue.WaitIdle(ctx, time.Millisecond); err != context.DeadlineExceeded {
		t.Fatalf("WaitIdle = %v; want deadline exceeded", err)
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestRetryOnRefusedGoesToNewLiveUpstream(t *testing.T) {
	dead, err := NewUpstream("blue", deadAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	_, green := app(t, "green")
	h := NewHandler(Options{RetryTimeout: 5 * time.Second})
	h.Route(dead)
	fe := frontend(t, h)

	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		// A POST with a body: safe to retry because the refused
		// connection never carried a byte of it.
		resp, err := http.Post(fe.URL+"/echo", "text/plain", strings.NewReader("payload"))
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode, body: string(b)}
	}()
	waitFor(t, func() bool { return dead.InFlight() == 1 })
	time.Sleep(30 * time.Millisecond) // let it fail at least once
	h.Route(green)
	r := <-res
	if r.err != nil || r.status != 200 || r.body != "green payload" {
		t.Fatalf("got status %d body %q err %v; want 200 \"green payload\"", r.status, r.body, r.err)
	}
	waitFor(t, func() bool { return green.InFlight() == 0 && dead.InFlight() == 0 })
}

func TestNoAppAnswers502(t *testing.T) {
	dead, err := NewUpstream("blue", deadAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{RetryTimeout: 50 * time.Millisecond})
	h.Route(dead)
	fe := frontend(t, h)
	resp, body := get(t, fe.URL, nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d; want 502", resp.StatusCode)
	}
	if !strings.Contains(body, "Bad Gateway") {
		t.Errorf("body %q; want a short explanation", body)
	}
	if dead.InFlight() != 0 {
		t.Errorf("in flight after failure = %d; want 0", dead.InFlight())
	}
}

func TestNoRoute503(t *testing.T) {
	fe := frontend(t, NewHandler(Options{}))
	if resp, _ := get(t, fe.URL, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d; want 503", resp.StatusCode)
	}
}

// TestUpgradedConnectionCountsUntilClosed proves a WebSocket-style upgraded
// connection keeps its upstream in flight, so a drain waits for it, and
// keeps working after a swap.
func TestUpgradedConnectionCountsUntilClosed(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}))
	defer backend.Close()
	blue, _ := NewUpstream("blue", backend.Listener.Addr().String())
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(blue)
	fe := frontend(t, h)

	conn, err := net.Dial("tcp", fe.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	fmt.Fprint(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	h.Route(green)
	for i := range 3 {
		fmt.Fprintf(conn, "msg %d\n", i)
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("echo msg %d\n", i) {
			t.Fatalf("after swap, read %q, %v", line, err)
		}
		if blue.InFlight() != 1 {
			t.Fatalf("blue in flight = %d while upgraded conn is open; want 1", blue.InFlight())
		}
	}
	conn.Close()
	waitFor(t, func() bool { return blue.InFlight() == 0 })
}

// TestStreamingIsFlushed proves server-sent events reach the client as they
// are written, not when the response ends.
func TestStreamingIsFlushed(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: two\n\n")
	}))
	defer backend.Close()
	defer close(release)
	u, _ := NewUpstream("blue", backend.Listener.Addr().String())
	h := NewHandler(Options{})
	h.Route(u)
	fe := frontend(t, h)
	resp, err := http.Get(fe.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
}

func TestConcurrentSwapsKeepCountsBalanced(t *testing.T) {
	_, blue := app(t, "blue")
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(blue)
	fe := frontend(t, h)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ups := []*Upstream{blue, green}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			h.Route(ups[i%2])
			time.Sleep(time.Millisecond)
		}
	}()
	var failures int
	var mu sync.Mutex
	var clients sync.WaitGroup
	for range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for range 50 {
				resp, err := http.Get(fe.URL)
				mu.Lock()
				if err != nil || resp.StatusCode != 200 {
					failures++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	if failures != 0 {
		t.Errorf("%d requests failed during swaps", failures)
	}
	if blue.InFlight() != 0 || green.InFlight() != 0 {
		t.Errorf("in flight after all done: blue=%d green=%d; want 0", blue.InFlight(), green.InFlight())
	}
	if blue.Served()+green.Served() != 200 {
		t.Errorf("served %d; want 200", blue.Served()+green.Served())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
