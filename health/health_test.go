package health

import (
	"context"
	"errors"
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
