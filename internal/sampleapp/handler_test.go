package sampleapp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// get does a request against srv and returns the response with its body
// fully read.
func get(t *testing.T, srv *httptest.Server, method, path string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test", "a")
	req.Header.Add("X-Test", "b")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(b)
}

func TestHandlerRoutes(t *testing.T) {
	srv := httptest.NewServer(Handler("v7", ""))
	t.Cleanup(srv.Close)

	tests := []struct {
		method, path string
		body         string
		wantStatus   int
		wantBody     string // exact, unless empty
	}{
		{"GET", "/", "", 200, "v7\n"},
		{"GET", "/any/other/path?q=1", "", 200, "v7\n"},
		{"HEAD", "/", "", 200, ""},
		{"GET", "/health", "", 200, "ok\n"},
		{"GET", "/slow?ms=20", "", 200, "v7\n"},
		{"GET", "/slow", "", 200, "v7\n"},
		{"GET", "/slow?ms=abc", "", 400, ""},
		{"GET", "/slow?ms=-5", "", 400, ""},
		{"POST", "/echo", strings.Repeat("x", 12345), 200, "v7 12345\n"},
		{"POST", "/echo", "", 200, "v7 0\n"},
		{"GET", "/fail", "", 500, "fail\n"},
		{"GET", "/big?kib=0", "", 200, ""},
		{"GET", "/big?kib=-1", "", 400, ""},
		{"GET", "/sse?n=x", "", 400, ""},
		{"GET", "/sse?interval=soon", "", 400, ""},
		{"POST", "/", "", 405, ""},
		{"GET", "/echo", "", 200, "v7\n"}, // GET falls through to the catch-all
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp, got := get(t, srv, tt.method, tt.path, body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d; want %d (body %q)", resp.StatusCode, tt.wantStatus, got)
			}
			if tt.wantBody != "" && got != tt.wantBody {
				t.Errorf("body = %q; want %q", got, tt.wantBody)
			}
			if v := resp.Header.Get(VersionHeader); v != "v7" {
				t.Errorf("%s = %q; want %q", VersionHeader, v, "v7")
			}
		})
	}
}

func TestHandlerHealthFile(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "unhealthy")
	srv := httptest.NewServer(Handler("v1", flag))
	t.Cleanup(srv.Close)

	if resp, body := get(t, srv, "GET", "/health", nil); resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("before file: %d %q; want 200 %q", resp.StatusCode, body, "ok\n")
	}
	if err := os.WriteFile(flag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, srv, "GET", "/health", nil); resp.StatusCode != 500 {
		t.Fatalf("with file: status %d; want 500", resp.StatusCode)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	if resp, _ := get(t, srv, "GET", "/health", nil); resp.StatusCode != 200 {
		t.Fatalf("after removing file: status %d; want 200", resp.StatusCode)
	}
}

func TestHandlerHeaders(t *testing.T) {
	srv := httptest.NewServer(Handler("v1", ""))
	t.Cleanup(srv.Close)

	resp, body := get(t, srv, "GET", "/headers", nil)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q; want application/json", ct)
	}
	var h map[string][]string
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	if got := strings.Join(h["X-Test"], ","); got != "a,b" {
		t.Errorf("X-Test = %q; want %q", got, "a,b")
	}
	wantHost := strings.TrimPrefix(srv.URL, "http://")
	if got := h["Host"]; len(got) != 1 || got[0] != wantHost {
		t.Errorf("Host = %q; want [%q]", got, wantHost)
	}
	if got := h["RemoteAddr"]; len(got) != 1 || !strings.HasPrefix(got[0], "127.0.0.1:") {
		t.Errorf("RemoteAddr = %q; want [127.0.0.1:port]", got)
	}
}

func TestHandlerBig(t *testing.T) {
	srv := httptest.NewServer(Handler("v1", ""))
	t.Cleanup(srv.Close)

	resp, body := get(t, srv, "GET", "/big?kib=100", nil)
	if resp.ContentLength != 100<<10 {
		t.Errorf("ContentLength = %d; want %d", resp.ContentLength, 100<<10)
	}
	if len(body) != 100<<10 {
		t.Errorf("body length = %d; want %d", len(body), 100<<10)
	}
	resp, body = get(t, srv, "GET", "/big", nil)
	if len(body) != DefaultBigKiB<<10 || resp.ContentLength != DefaultBigKiB<<10 {
		t.Errorf("default: length %d, ContentLength %d; want %d", len(body), resp.ContentLength, DefaultBigKiB<<10)
	}
}

func TestHandlerSSE(t *testing.T) {
	srv := httptest.NewServer(Handler("v3", ""))
	t.Cleanup(srv.Close)

	resp, err := srv.Client().Get(srv.URL + "/sse?n=3&interval=150ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q; want text/event-stream", ct)
	}
	// Each event must arrive on its own, before the next is due: that is
	// what proves it was flushed rather than buffered to the end.
	br := bufio.NewReader(resp.Body)
	start := time.Now()
	var arrivals []time.Duration
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want := "data: v3 " + string(rune('0'+i)) + "\n"
		if line != want {
			t.Errorf("event %d = %q; want %q", i, line, want)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Errorf("event %d not followed by a blank line: %q", i, blank)
		}
		arrivals = append(arrivals, time.Since(start))
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("trailing data after 3 events: %q", rest)
	}
	if arrivals[0] > 100*time.Millisecond {
		t.Errorf("first event after %v; want it at once", arrivals[0])
	}
	if arrivals[2] < 250*time.Millisecond {
		t.Errorf("third event after %v; want about 300ms", arrivals[2])
	}
}

func TestHandlerSlowHonoursCancel(t *testing.T) {
	srv := httptest.NewServer(Handler("v1", ""))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow?ms=60000", nil)
	start := time.Now()
	_, err := srv.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want deadline exceeded", err)
	}
	// The handler must notice and return, so in_flight drops back to 0.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := get(t, srv, "GET", "/stats", nil)
		var s Stats
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decode stats %q: %v", body, err)
		}
		if s.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in_flight = %d %v after the client left; want 0", s.InFlight, time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSlowDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"250", 250 * time.Millisecond, false},
		{"60000", MaxSlow, false},
		{"60001", MaxSlow, false},
		{"99999999999999", MaxSlow, false},
		{"-1", 0, true},
		{"1.5", 0, true},
		{"x", 0, true},
	}
	for _, tt := range tests {
		got, err := slowDuration(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("slowDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestHandlerStats(t *testing.T) {
	srv := httptest.NewServer(Handler("v2", ""))
	t.Cleanup(srv.Close)

	get(t, srv, "GET", "/", nil)
	get(t, srv, "GET", "/fail", nil)
	_, body := get(t, srv, "GET", "/stats", nil)
	var s Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	want := Stats{Version: "v2", InFlight: 0, RequestsTotal: 2}
	if s != want {
		t.Errorf("stats = %+v; want %+v", s, want)
	}
}

func TestHandlerWebSocket(t *testing.T) {
	srv := httptest.NewServer(Handler("v3", ""))
	defer srv.Close()
	conn, br, version, err := DialWebSocket(srv.Listener.Addr().String(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if version != "v3" {
		t.Errorf("version line %q; want v3", version)
	}
	io.WriteString(conn, "hello\n")
	if got, err := br.ReadString('\n'); got != "hello\n" {
		t.Errorf("echo = %q (%v); want hello", got, err)
	}
	if resp, body := get(t, srv, "GET", "/ws", nil); resp.StatusCode != 400 {
		t.Errorf("GET /ws without a handshake: %d %q; want 400", resp.StatusCode, body)
	}
}
