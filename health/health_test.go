package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestOnly2xxIsHealthy(t *testing.T) {
	for _, tc := range []struct {
		status int
		ok     bool
	}{{200, true}, {204, true}, {http.StatusMovedPermanently, false}, {404, false}, {500, false}, {503, false}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/ready" {
				t.Errorf("probed %s; want /ready", r.URL.Path)
			}
			if tc.status == http.StatusMovedPermanently {
				http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
				return
			}
			w.WriteHeader(tc.status)
		}))
		err := New("/ready", time.Second).Check(context.Background(), srv.Listener.Addr().String())
		srv.Close()
		if (err == nil) != tc.ok {
			t.Errorf("status %d: Check = %v; want healthy=%v", tc.status, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrUnhealthy) {
			t.Errorf("status %d: error %v does not wrap ErrUnhealthy", tc.status, err)
		}
		if err != nil && !strings.Contains(err.Error(), "status") {
			t.Errorf("status %d: error %q does not name the status", tc.status, err)
		}
	}
}

func TestRefusedAndTimeout(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	if err := New("", time.Second).Check(context.Background(), dead); err == nil || errors.Is(err, ErrUnhealthy) {
		t.Errorf("refused: %v; want a transport error", err)
	}
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()
	start := time.Now()
	if err := New("", 100*time.Millisecond).Check(context.Background(), hang.Listener.Addr().String()); err == nil {
		t.Error("hung app reported healthy")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("timeout took %s; want ~100ms", took)
	}
}

// Issue 13, item 18: a failing check said only "status 500: unhealthy",
// while Spring Actuator's body names the failing component. The error now
// carries the body's first 200 bytes, on one line.
func TestUnhealthyErrorShowsTheBody(t *testing.T) {
	body := `{"status":"DOWN","components":{"db":{"status":"DOWN","details":{"error":"Connection refused"}}}}` + "\n" + strings.Repeat("x", 300)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.spring-boot.actuator.v3+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	err := New("/health", time.Second).Check(context.Background(), srv.Listener.Addr().String())
	if !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("err = %v; want ErrUnhealthy", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "status 503") || !strings.Contains(msg, `"db":{"status":"DOWN","details":{"error":"Connection refused"}}`) {
		t.Errorf("error %q; want the status and the body naming the failing component", msg)
	}
	if strings.Contains(msg, "\n") || strings.Contains(msg, strings.Repeat("x", 120)) {
		t.Errorf("error %q; want the body cut at 200 bytes, on one line", msg)
	}
	// An empty body adds nothing.
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	t.Cleanup(empty.Close)
	err = New("/health", time.Second).Check(context.Background(), empty.Listener.Addr().String())
	if err == nil || !strings.HasSuffix(err.Error(), "status 500: unhealthy") {
		t.Errorf("empty body: err = %v; want it to end in \"status 500: unhealthy\"", err)
	}
}
