package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/syncbuf"
)

// An app that takes too long to answer gets a 504 at UpstreamTimeout, the
// timeout is logged, the in-flight count comes back to zero, and a slow
// body that started in time is not cut.
func TestUpstreamTimeoutIs504(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		case "/trickle":
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
			io.WriteString(w, "all of it")
		default:
			io.WriteString(w, "fast")
		}
	}))
	t.Cleanup(srv.Close)
	u, err := NewUpstream("blue", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	h := NewHandler(Options{UpstreamTimeout: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	h.Route(u)
	fe := frontend(t, h)

	start := time.Now()
	resp, body := get(t, fe.URL+"/hang", nil)
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
		t.Errorf("hung app: %d %q; want 504", resp.StatusCode, body)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("hung app answered after %s; want about the 200ms timeout", took)
	}
	if l := logs.String(); !strings.Contains(l, "kind=timeout") || !strings.Contains(l, "upstream timeout of 200ms") {
		t.Errorf("log %q; want the timeout reported", l)
	}
	if resp, body := get(t, fe.URL+"/trickle", nil); resp.StatusCode != 200 || body != "all of it" {
		t.Errorf("slow body: %d %q; want 200 with the whole body (only headers are bounded)", resp.StatusCode, body)
	}
	for range 3 {
		if resp, body := get(t, fe.URL+"/", nil); resp.StatusCode != 200 || body != "fast" {
			t.Errorf("after a timeout: %d %q; want 200 fast", resp.StatusCode, body)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for u.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight %d after the timeouts; want 0", u.InFlight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A request that could not reach its upstream's app and was retried on the
// upstream that became live stops counting on the first one: a drain of a
// dead app must not wait for requests that another app is serving.
func TestRetriedRequestLeavesTheDeadUpstream(t *testing.T) {
	dead, err := NewUpstream("blue", deadAddrForTest(t))
	if err != nil {
		t.Fatal(err)
	}
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(dead)
	fe := frontend(t, h)
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(fe.URL + "/slow?d=600ms")
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b)}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for dead.InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the proxy")
		}
		time.Sleep(time.Millisecond)
	}
	h.Route(green) // the swap the retries were waiting for
	for green.InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the request was never retried on green")
		}
		time.Sleep(time.Millisecond)
	}
	// The retry counts on green first and then stops counting on the dead
	// upstream, so for an instant both count it: poll, while green is
	// still serving the 600 ms request.
	for dead.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Errorf("the dead upstream counts %d request(s) in flight while green serves it; want 0", dead.InFlight())
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := green.InFlight(); n != 1 {
		t.Errorf("green counts %d request(s) in flight; want the retried one", n)
	}
	if r := <-done; r.code != 200 || r.body != "green" {
		t.Errorf("retried request: %d %q; want 200 green", r.code, r.body)
	}
	for dead.InFlight() != 0 || green.InFlight() != 0 {
		if time.Now().After(deadline.Add(2 * time.Second)) {
			t.Fatalf("in flight blue %d green %d after the request; want 0 and 0", dead.InFlight(), green.InFlight())
		}
		time.Sleep(time.Millisecond)
	}
}

func deadAddrForTest(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
