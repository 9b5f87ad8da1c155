package sampleapp

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Limits on query parameters, so that a typo in a test cannot make the app
// sleep for an hour or stream a terabyte.
const (
	// MaxSlow is the longest sleep /slow accepts; larger values are capped.
	MaxSlow = 60 * time.Second
	// MaxBigKiB is the largest body /big serves, in KiB (1 GiB).
	MaxBigKiB = 1 << 20
	// MaxSSEEvents is the largest number of events /sse sends.
	MaxSSEEvents = 100000
	// DefaultSSEInterval is the pause between /sse events when interval is absent.
	DefaultSSEInterval = 100 * time.Millisecond
	// DefaultSSEEvents is the number of /sse events when n is absent.
	DefaultSSEEvents = 10
	// DefaultBigKiB is the size of the /big body when kib is absent.
	DefaultBigKiB = 1024
)

// VersionHeader is the response header that carries the app's version on
// every response, including errors.
const VersionHeader = "X-App-Version"

// bigChunk is the repeating block /big writes; shared read-only.
var bigChunk = func() []byte {
	b := make([]byte, 32<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// app holds the state shared by the handlers of one Handler.
type app struct {
	version        string
	failHealthFile string
	inFlight       atomic.Int64
	requests       atomic.Int64
}

// Handler returns the HTTP handler of the sample app answering as version.
// If failHealthFile is not empty and a file of that name exists (os.Stat
// succeeds), GET /health answers 500; the empty string turns that off.
//
// Every response, errors included, carries the X-App-Version header. The
// routes are:
//
//	GET  /              200 "<version>\n" (any GET path not listed below)
//	GET  /health        200 "ok\n", or 500 "unhealthy\n" while failHealthFile exists
//	GET  /slow?ms=N     sleeps N ms (capped at MaxSlow), then 200 "<version>\n";
//	                    returns early without answering if the client goes away
//	POST /echo          reads the whole body, 200 "<version> <bytes read>\n"
//	GET  /headers       200 JSON map[string][]string of the request headers as
//	                    received, plus "Host" and "RemoteAddr"
//	GET  /sse?n=N&interval=D
//	                    N Server-Sent Events "data: <version> <i>\n\n", i from 0
//	                    to N-1, each flushed, D apart (Go duration, default 100ms)
//	GET  /ws            a WebSocket handshake (RFC 6455: 101 with
//	                    Sec-WebSocket-Accept), then "<version>\n" and an echo of
//	                    every byte the client sends until it closes (no frame
//	                    parsing: baton relays the bytes of an upgraded
//	                    connection as they are)
//	GET  /fail          500 "fail\n"
//	GET  /big?kib=N     N KiB of body (default 1024), Content-Length set
//	GET  /stats         200 JSON {"version", "in_flight", "requests_total"}, where
//	                    in_flight counts requests being served other than /stats;
//	                    tests use it to know a request has reached the app
//
// A malformed query parameter gets 400. The handler is safe for concurrent
// use.
func Handler(version string, failHealthFile string) http.Handler {
	a := &app{version: version, failHealthFile: failHealthFile}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /", a.root)
	mux.HandleFunc("GET /health", a.health)
	mux.HandleFunc("GET /slow", a.slow)
	mux.HandleFunc("POST /echo", a.echo)
	mux.HandleFunc("GET /headers", a.headers)
	mux.HandleFunc("GET /sse", a.sse)
	mux.HandleFunc("GET /ws", a.ws)
	mux.HandleFunc("GET /fail", a.fail)
	mux.HandleFunc("GET /big", a.big)
	mux.HandleFunc("GET /stats", a.stats)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(VersionHeader, a.version)
		if r.URL.Path != "/stats" {
			a.requests.Add(1)
			a.inFlight.Add(1)
			defer a.inFlight.Add(-1)
		}
		mux.ServeHTTP(w, r)
	})
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (a *app) root(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusOK, a.version+"\n")
}

func (a *app) health(w http.ResponseWriter, r *http.Request) {
	if a.failHealthFile != "" {
		if _, err := os.Stat(a.failHealthFile); err == nil {
			writeText(w, http.StatusInternalServerError, "unhealthy\n")
			return
		}
	}
	writeText(w, http.StatusOK, "ok\n")
}

// slowDuration parses the ms query value of /slow, capping it at MaxSlow.
func slowDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 {
		return 0, fmt.Errorf("bad ms %q: want a non-negative integer", s)
	}
	if ms > MaxSlow.Milliseconds() {
		return MaxSlow, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func (a *app) slow(w http.ResponseWriter, r *http.Request) {
	d, err := slowDuration(r.URL.Query().Get("ms"))
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		// The client is gone; there is nobody to answer.
		return
	}
	writeText(w, http.StatusOK, a.version+"\n")
}

func (a *app) echo(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("read body after %d bytes: %v\n", n, err))
		return
	}
	writeText(w, http.StatusOK, a.version+" "+strconv.FormatInt(n, 10)+"\n")
}

func (a *app) headers(w http.ResponseWriter, r *http.Request) {
	h := make(map[string][]string, len(r.Header)+2)
	for k, v := range r.Header {
		h[k] = v
	}
	h["Host"] = []string{r.Host}
	h["RemoteAddr"] = []string{r.RemoteAddr}
	writeJSON(w, h)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, "encode json: "+err.Error()+"\n")
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// webSocketGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const webSocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func (a *app) ws(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || key == "" {
		writeText(w, http.StatusBadRequest, "want a WebSocket handshake: Upgrade: websocket and Sec-WebSocket-Key\n")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeText(w, http.StatusInternalServerError, "cannot take over the connection: "+err.Error()+"\n")
		return
	}
	defer conn.Close()
	sum := sha1.Sum([]byte(key + webSocketGUID))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\n%s: %s\r\n\r\n%s\n", base64.StdEncoding.EncodeToString(sum[:]), VersionHeader, a.version, a.version)
	if brw.Flush() != nil {
		return
	}
	io.Copy(conn, brw) // echo; ends when the client closes
}

func (a *app) sse(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n := DefaultSSEEvents
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > MaxSSEEvents {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("bad n %q: want 0..%d\n", s, MaxSSEEvents))
			return
		}
		n = v
	}
	interval := DefaultSSEInterval
	if s := q.Get("interval"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("bad interval %q: want a Go duration such as 100ms\n", s))
			return
		}
		interval = v
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	var t *time.Timer
	for i := range n {
		if i > 0 {
			if t == nil {
				t = time.NewTimer(interval)
				defer t.Stop()
			} else {
				t.Reset(interval)
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		if _, err := fmt.Fprintf(w, "data: %s %d\n\n", a.version, i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (a *app) fail(w http.ResponseWriter, r *http.Request) {
	writeText(w, http.StatusInternalServerError, "fail\n")
}

func (a *app) big(w http.ResponseWriter, r *http.Request) {
	kib := DefaultBigKiB
	if s := r.URL.Query().Get("kib"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > MaxBigKiB {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("bad kib %q: want 0..%d\n", s, MaxBigKiB))
			return
		}
		kib = v
	}
	left := int64(kib) << 10
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(left, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for left > 0 {
		chunk := bigChunk
		if int64(len(chunk)) > left {
			chunk = chunk[:left]
		}
		m, err := w.Write(chunk)
		if err != nil {
			return
		}
		left -= int64(m)
	}
}

// Stats is the body of GET /stats.
type Stats struct {
	// Version is the version the app answers as.
	Version string `json:"version"`
	// InFlight is the number of requests being served, not counting /stats.
	InFlight int64 `json:"in_flight"`
	// RequestsTotal is the number of requests received, not counting /stats.
	RequestsTotal int64 `json:"requests_total"`
}

func (a *app) stats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, Stats{Version: a.version, InFlight: a.inFlight.Load(), RequestsTotal: a.requests.Load()})
}

// DialWebSocket opens /ws at addr (host:port) with the given Host header,
// as a test client of the app or of baton in front of it: it checks the
// handshake's Sec-WebSocket-Accept and returns the connection, a reader
// of what follows, and the version that answered.
func DialWebSocket(addr, host string) (net.Conn, *bufio.Reader, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, "", err
	}
	const key = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455's example key
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, key)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err == nil && resp.StatusCode != http.StatusSwitchingProtocols {
		err = fmt.Errorf("handshake answered %s", resp.Status)
	}
	if err == nil && resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		err = fmt.Errorf("handshake: Sec-WebSocket-Accept %q is not RFC 6455's", resp.Header.Get("Sec-WebSocket-Accept"))
	}
	var version string
	if err == nil {
		version, err = br.ReadString('\n')
	}
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, "", fmt.Errorf("websocket to %s (Host %s): %w", addr, host, err)
	}
	return conn, br, strings.TrimSpace(version), nil
}
