package sampleapp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/syncbuf"
)

// listenWatcher is an io.Writer for the app's stdout that records what was
// written and delivers the address of the first "listening on" line. It is
// safe for concurrent use.
type listenWatcher struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	seen bool
	addr chan string
}

func newListenWatcher() *listenWatcher {
	return &listenWatcher{addr: make(chan string, 1)}
}

func (w *listenWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.seen {
		for line := range strings.Lines(w.buf.String()) {
			var version, addr string
			var pid int
			if _, err := fmt.Sscanf(line, "sampleapp %s listening on %s pid %d\n", &version, &addr, &pid); err == nil {
				w.seen = true
				w.addr <- addr
				break
			}
		}
	}
	return len(p), nil
}

func (w *listenWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitAddr returns the listening address, failing the test if the line does
// not appear within timeout or the app stops first.
func (w *listenWatcher) waitAddr(t *testing.T, timeout time.Duration, stopped <-chan struct{}) string {
	t.Helper()
	select {
	case addr := <-w.addr:
		return addr
	case <-stopped:
		t.Fatalf("app stopped before listening; stdout %q", w.String())
	case <-time.After(timeout):
		t.Fatalf("no listening line after %v; stdout %q", timeout, w.String())
	}
	return ""
}

func noEnv(string) string { return "" }

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := newListenWatcher(), &syncbuf.Buffer{}
	code := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		code <- run(ctx, []string{"--addr", "127.0.0.1:0", "--version", "v9"}, stdout, stderr, noEnv)
		close(done)
	}()
	addr := stdout.waitAddr(t, 5*time.Second, done)

	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "v9\n" || resp.Header.Get(VersionHeader) != "v9" {
		t.Errorf("GET / = %q, %s %q; want %q", body, VersionHeader, resp.Header.Get(VersionHeader), "v9\n")
	}

	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d; want 0; stderr:\n%s", c, stderr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(stderr.String(), "signal_exit_now") {
		t.Errorf("stderr lacks signal_exit_now:\n%s", stderr)
	}
}

func TestRunStartupDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := newListenWatcher()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		run(ctx, []string{"--port", "0", "--startup-delay", "300ms"}, stdout, io.Discard, noEnv)
	}()
	stdout.waitAddr(t, 5*time.Second, done)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("listening after %v; want at least the 300ms start-up delay", d)
	}
	cancel()
	<-done
}

func TestRunSignalDuringStartupDelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stdout := newListenWatcher()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--port", "0", "--startup-delay", "1h"}, stdout, io.Discard, noEnv)
	}()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d; want 0", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run still sleeping 5s after cancel")
	}
	if s := stdout.String(); s != "" {
		t.Errorf("stdout = %q; want nothing (never listened)", s)
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantErr  string // substring of stderr
	}{
		{"help", []string{"--help"}, nil, 0, "-startup-delay"},
		{"unknown flag", []string{"--bogus"}, nil, 2, "flag provided but not defined"},
		{"bad duration", []string{"--startup-delay", "soon"}, nil, 2, "invalid value"},
		{"negative delay", []string{"--startup-delay", "-1s"}, nil, 2, "negative"},
		{"port and addr", []string{"--port", "1", "--addr", "127.0.0.1:2"}, nil, 2, "use one"},
		{"port out of range", []string{"--port", "70000"}, nil, 2, "--port 70000"},
		{"bad PORT", nil, map[string]string{"PORT": "eighty"}, 2, `PORT="eighty"`},
		{"empty version", []string{"--version", ""}, nil, 2, "--version is empty"},
		{"argument", []string{"serve"}, nil, 2, `unexpected argument "serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			getenv := func(k string) string { return tt.env[k] }
			got := run(context.Background(), tt.args, io.Discard, &stderr, getenv)
			if got != tt.wantCode {
				t.Errorf("exit code %d; want %d; stderr:\n%s", got, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr.String())
			}
		})
	}
}

func TestRunListenFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stderr bytes.Buffer
	addr := ln.Addr().String()
	if got := run(context.Background(), []string{"--addr", addr}, io.Discard, &stderr, noEnv); got != 1 {
		t.Errorf("exit code %d; want 1", got)
	}
	if want := "sampleapp: listen on " + addr + ": "; !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("stderr = %q; want prefix %q", stderr.String(), want)
	}
}

func TestParseFlagsAddr(t *testing.T) {
	tests := []struct {
		args []string
		port string
		want string
	}{
		{nil, "", "127.0.0.1:8080"},
		{nil, "9000", "127.0.0.1:9000"},
		{[]string{"--port", "9001"}, "9000", "127.0.0.1:9001"},
		{[]string{"--addr", "127.0.0.1:0"}, "9000", "127.0.0.1:0"},
		{[]string{"--addr", "127.0.0.1:0"}, "junk", "127.0.0.1:0"}, // PORT unused
	}
	for _, tt := range tests {
		c, err := parseFlags(tt.args, io.Discard, func(string) string { return tt.port })
		if err != nil || c.addr != tt.want {
			t.Errorf("parseFlags(%q) with PORT=%q: addr %q, err %v; want %q", tt.args, tt.port, c.addr, err, tt.want)
		}
	}
}

func TestRunFailRequestsAndCrashAfter(t *testing.T) {
	stdout, stderr := newListenWatcher(), &syncbuf.Buffer{}
	code := make(chan int, 1)
	done := make(chan struct{})
	go func() {
		code <- run(context.Background(), []string{"--addr", "127.0.0.1:0", "--version", "v5", "--fail-requests", "--crash-after", "500ms"}, stdout, stderr, noEnv)
		close(done)
	}()
	addr := stdout.waitAddr(t, 5*time.Second, done)
	for path, want := range map[string]int{"/health": 200, "/": 500, "/slow?ms=1": 500} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get(VersionHeader) != "v5" {
			t.Errorf("GET %s = %d (version %q); want %d from v5", path, resp.StatusCode, resp.Header.Get(VersionHeader), want)
		}
	}
	select {
	case c := <-code:
		if c != crashExitCode {
			t.Errorf("exit code %d; want %d", c, crashExitCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("--crash-after 500ms did not end run")
	}
	if _, err := http.Get("http://" + addr + "/health"); err == nil {
		t.Error("the app still answers after its crash")
	}
}
