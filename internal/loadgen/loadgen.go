// Package loadgen is an HTTP/1.1 load client for baton's tests and benchmarks
// that never hides a failure.
//
// Go's http.Transport retries an idempotent request that failed on a reused
// keep-alive connection, so a proxy that drops connections during a switch
// can look flawless through it. This client writes each request by hand on a
// net.Conn, reads the answer with http.ReadResponse, and records every
// attempt exactly once: a request that fails on any connection, reused or
// fresh, is a failure, never retried.
//
// # Model
//
// One dispatcher goroutine paces requests at Config.Rate (a shared schedule,
// the k-th request due k/Rate after the start) and picks each request's kind
// at random from the fractions in Config:
//
//   - "keepalive" (GET Path) and "post" (POST PostPath, /echo by default,
//     with a 1-16 KiB body) go
//     to KeepAliveConns workers, each holding one keep-alive connection. A
//     worker reconnects, for its next request, after a failure or an answer
//     with "Connection: close" (the latter is not a failure).
//   - "newconn" (GET Path with "Connection: close") and "slow" (GET
//     /slow?ms=X with "Connection: close") each run in a goroutine of their
//     own on a fresh connection, at most MaxOneShot at a time, so a slow
//     request never holds up the pace of the others.
//
// When every worker is busy the dispatcher waits; once it falls more than
// 100ms of requests behind schedule it drops the excess and counts it in
// Report.Skipped, rather than bursting to catch up.
//
// Each request has its own deadline (Timeout, plus X for a slow request),
// independent of the context given to Run: cancelling the context stops new
// requests, and Run returns once those in flight have finished.
//
// POST requests expect the sample app's /echo answer, "<version> <bytes
// read>", and count a byte count that differs from what was sent as a
// failure (unless SkipEchoCheck is set).
//
// The version that answered is read from the VersionHeader response header
// (X-App-Version by default) or, with VersionFromBody and no such header,
// from the first word of the body.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Request kinds, as recorded in Result.Kind.
const (
	KindKeepAlive = "keepalive"
	KindNewConn   = "newconn"
	KindSlow      = "slow"
	KindPost      = "post"
)

// Defaults for the zero values of Config fields.
const (
	DefaultPath     = "/"
	DefaultSlowPath = "/slow"
	DefaultPostPath = "/echo"
	// DefaultVersionHeader is the sample app's version header.
	DefaultVersionHeader = "X-App-Version"
	DefaultTimeout       = 10 * time.Second
	DefaultSlowMin       = 500 * time.Millisecond
	DefaultSlowMax       = 2 * time.Second
	DefaultMaxOneShot    = 256
)

// POST body sizes, uniform in [minPostBody, maxPostBody].
const (
	minPostBody = 1 << 10
	maxPostBody = 16 << 10
)

// postPayload is the shared, read-only source of POST bodies.
var postPayload = bytes.Repeat([]byte("baton-loadgen-0123456789abcdef\n"), maxPostBody/31+1)[:maxPostBody]

// ReadResponse only reads the Method of these (to know whether a body may
// follow), so sharing them between goroutines is safe.
var (
	getRequest  = &http.Request{Method: http.MethodGet}
	postRequest = &http.Request{Method: http.MethodPost}
)

// Config describes a load. The zero value of each field has the meaning given
// on it; Target is required.
type Config struct {
	// Target is the host:port to connect to.
	Target string
	// Host is the Host header; empty means Target.
	Host string
	// Rate is the total number of requests per second across all workers;
	// 0 means as fast as the workers go.
	Rate int
	// KeepAliveConns is the number of workers each holding one keep-alive
	// connection for "keepalive" and "post" requests; 0 means 1.
	KeepAliveConns int
	// NewConnFraction is the fraction of requests sent on a fresh
	// connection with "Connection: close".
	NewConnFraction float64
	// SlowFraction is the fraction of requests that are GET SlowPath?ms=X,
	// each on a fresh connection, with X uniform in [SlowMin, SlowMax]
	// (millisecond resolution).
	SlowFraction float64
	// SlowMin and SlowMax bound the sleep of slow requests; both zero means
	// DefaultSlowMin and DefaultSlowMax, and SlowMax zero alone means SlowMin.
	SlowMin, SlowMax time.Duration
	// PostFraction is the fraction of requests that are POST /echo with a
	// 1-16 KiB body, sent on the keep-alive workers.
	PostFraction float64
	// Path is the path of "keepalive" and "newconn" GET requests; empty
	// means "/".
	Path string
	// Timeout bounds each request from dial to the end of the body; a slow
	// request gets Timeout plus its X. 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxOneShot bounds how many "newconn" and "slow" requests may be in
	// flight at once; 0 means DefaultMaxOneShot.
	MaxOneShot int
	// SlowPath is the path of "slow" requests, to which "?ms=X" is
	// appended; empty means DefaultSlowPath.
	SlowPath string
	// PostPath is the path of "post" requests; empty means
	// DefaultPostPath.
	PostPath string
	// SkipEchoCheck accepts any 2xx answer to a POST instead of checking
	// the sample app's "<version> <bytes read>" answer.
	SkipEchoCheck bool
	// VersionHeader is the response header naming the version that
	// answered; empty means DefaultVersionHeader.
	VersionHeader string
	// VersionFromBody, when the answer has no VersionHeader, takes the
	// version from the first word of the body (of its first 64 bytes).
	VersionFromBody bool
	// TLS, if set, makes every connection a TLS client connection with
	// this configuration (set its ServerName).
	TLS *tls.Config
}

// Validate reports every problem with c, joined, or nil.
func (c Config) Validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("target is empty"))
	} else if _, _, err := net.SplitHostPort(c.Target); err != nil {
		errs = append(errs, fmt.Errorf("target %q: want host:port: %w", c.Target, err))
	}
	if strings.ContainsAny(c.Host, " \r\n") {
		errs = append(errs, fmt.Errorf("host %q contains a space or a line break", c.Host))
	}
	for _, p := range []struct{ name, v string }{{"path", c.Path}, {"slow path", c.SlowPath}, {"post path", c.PostPath}} {
		if p.v != "" && (!strings.HasPrefix(p.v, "/") || strings.ContainsAny(p.v, " \r\n")) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute path without spaces", p.name, p.v))
		}
	}
	if strings.Contains(c.SlowPath, "?") {
		errs = append(errs, fmt.Errorf("slow path %q: want no query; ?ms=X is appended", c.SlowPath))
	}
	if strings.ContainsAny(c.VersionHeader, " :\r\n") {
		errs = append(errs, fmt.Errorf("version header %q: want a header name", c.VersionHeader))
	}
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %d is negative", c.Rate))
	}
	if c.KeepAliveConns < 0 {
		errs = append(errs, fmt.Errorf("keep-alive conns %d is negative", c.KeepAliveConns))
	}
	if c.MaxOneShot < 0 {
		errs = append(errs, fmt.Errorf("max one-shot %d is negative", c.MaxOneShot))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"new-conn", c.NewConnFraction}, {"slow", c.SlowFraction}, {"post", c.PostFraction}} {
		if !(f.v >= 0 && f.v <= 1) {
			errs = append(errs, fmt.Errorf("%s fraction %v: want 0..1", f.name, f.v))
		}
	}
	if sum := c.NewConnFraction + c.SlowFraction + c.PostFraction; sum > 1+1e-9 {
		errs = append(errs, fmt.Errorf("fractions add up to %v: want at most 1", sum))
	}
	if c.SlowMin < 0 || c.SlowMax < 0 {
		errs = append(errs, fmt.Errorf("slow range [%v, %v] is negative", c.SlowMin, c.SlowMax))
	}
	if c.SlowMax != 0 && c.SlowMax < c.SlowMin {
		errs = append(errs, fmt.Errorf("slow max %v is below slow min %v", c.SlowMax, c.SlowMin))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", c.Timeout))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with its zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = c.Target
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.SlowPath == "" {
		c.SlowPath = DefaultSlowPath
	}
	if c.PostPath == "" {
		c.PostPath = DefaultPostPath
	}
	if c.VersionHeader == "" {
		c.VersionHeader = DefaultVersionHeader
	}
	if c.KeepAliveConns == 0 {
		c.KeepAliveConns = 1
	}
	if c.MaxOneShot == 0 {
		c.MaxOneShot = DefaultMaxOneShot
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.SlowMin == 0 && c.SlowMax == 0 {
		c.SlowMin, c.SlowMax = DefaultSlowMin, DefaultSlowMax
	}
	if c.SlowMax == 0 {
		c.SlowMax = c.SlowMin
	}
	return c
}

// job is one request chosen by the dispatcher.
type job struct {
	kind string
	slow time.Duration // KindSlow: the server-side sleep
	size int           // KindPost: body length
}

// runner is the state of one Run.
type runner struct {
	cfg   Config
	fast  chan job      // to the keep-alive workers
	sem   chan struct{} // one token per one-shot request in flight
	conns atomic.Int64

	mu      sync.Mutex
	results []Result
}

// Run sends requests as cfg describes until ctx is done, waits for the
// requests in flight to finish (each within its own deadline), and returns
// the report. If cfg is invalid it sends nothing and returns a report whose
// Err says why. Concurrent Runs are independent.
func Run(ctx context.Context, cfg Config) *Report {
	rep := &Report{Start: time.Now()}
	if err := cfg.Validate(); err != nil {
		rep.Err = fmt.Errorf("loadgen: invalid config: %w", err)
		rep.End = rep.Start
		return rep
	}
	r := &runner{
		cfg:  cfg.withDefaults(),
		fast: make(chan job),
	}
	r.sem = make(chan struct{}, r.cfg.MaxOneShot)
	if cfg.Rate > 0 {
		r.results = make([]Result, 0, min(cfg.Rate*10, 1<<20))
	}

	var wg sync.WaitGroup
	for range r.cfg.KeepAliveConns {
		wg.Go(r.keepAliveWorker)
	}
	rep.Skipped = r.dispatch(ctx, &wg)
	close(r.fast)
	wg.Wait()

	rep.End = time.Now()
	rep.Conns = int(r.conns.Load())
	rep.Results = r.results
	slices.SortStableFunc(rep.Results, func(a, b Result) int { return a.Start.Compare(b.Start) })
	return rep
}

// dispatch paces and hands out jobs until ctx is done. It returns the number
// of scheduled requests it dropped because it had fallen too far behind.
func (r *runner) dispatch(ctx context.Context, wg *sync.WaitGroup) int {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	rate := float64(r.cfg.Rate)
	maxBacklog := int64(max(1, r.cfg.Rate/10)) // 100ms of requests
	var (
		start   = time.Now()
		sent    int64 // requests accounted for (sent or skipped)
		skipped int64
		timer   *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		if rate > 0 {
			due := int64(time.Since(start).Seconds()*rate) + 1 // request k is due at k/rate
			if sent >= due {
				next := start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))
				wait := time.Until(next)
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
					return int(skipped)
				}
				continue
			}
			if behind := due - sent; behind > maxBacklog {
				skipped += behind - maxBacklog
				sent += behind - maxBacklog
			}
		}
		if !r.send(ctx, r.pick(rng), wg) {
			break
		}
		sent++
	}
	return int(skipped)
}

// pick chooses the next job's kind and parameters.
func (r *runner) pick(rng *rand.Rand) job {
	c := &r.cfg
	x := rng.Float64()
	switch {
	case x < c.NewConnFraction:
		return job{kind: KindNewConn}
	case x < c.NewConnFraction+c.SlowFraction:
		lo, hi := c.SlowMin.Milliseconds(), c.SlowMax.Milliseconds()
		ms := lo + rng.Int64N(hi-lo+1)
		return job{kind: KindSlow, slow: time.Duration(ms) * time.Millisecond}
	case x < c.NewConnFraction+c.SlowFraction+c.PostFraction:
		return job{kind: KindPost, size: minPostBody + rng.IntN(maxPostBody-minPostBody+1)}
	default:
		return job{kind: KindKeepAlive}
	}
}

// send hands j to a keep-alive worker or starts a one-shot goroutine for it.
// It reports false if ctx was done first.
func (r *runner) send(ctx context.Context, j job, wg *sync.WaitGroup) bool {
	switch j.kind {
	case KindKeepAlive, KindPost:
		select {
		case r.fast <- j:
			return true
		case <-ctx.Done():
			return false
		}
	default:
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		wg.Go(func() {
			defer func() { <-r.sem }()
			c := r.newClient()
			r.record(c.do(j))
			c.close()
		})
		return true
	}
}

func (r *runner) keepAliveWorker() {
	c := r.newClient()
	defer c.close()
	for j := range r.fast {
		r.record(c.do(j))
	}
}

func (r *runner) record(res Result) {
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
}

// client is one connection, opened lazily, and its buffers. It is used by
// one goroutine at a time.
type client struct {
	r           *runner
	conn        net.Conn // nil when there is no open connection
	br          *bufio.Reader
	bw          *bufio.Writer
	head        []byte // scratch for the request head
	body        []byte // scratch for a POST answer
	lastVersion string // to share one string among equal versions
}

func (r *runner) newClient() *client {
	return &client{
		r:  r,
		br: bufio.NewReaderSize(nil, 4<<10),
		bw: bufio.NewWriterSize(nil, 4<<10),
	}
}

func (c *client) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// do performs one request, dialling first if there is no open connection,
// and returns its result. The connection is closed after a failure, after a
// request sent with "Connection: close" and after an answer that asks for it.
func (c *client) do(j job) Result {
	cfg := &c.r.cfg
	start := time.Now()
	res := Result{Start: start, Kind: j.kind}
	deadline := start.Add(cfg.Timeout + j.slow)
	oneShot := j.kind == KindNewConn || j.kind == KindSlow

	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		var conn net.Conn
		var err error
		if cfg.TLS != nil {
			conn, err = (&tls.Dialer{NetDialer: &d, Config: cfg.TLS}).Dial("tcp", cfg.Target)
		} else {
			conn, err = d.Dial("tcp", cfg.Target)
		}
		if err != nil {
			return c.fail(res, start, "dial", err)
		}
		c.r.conns.Add(1)
		c.conn = conn
		c.br.Reset(conn)
		c.bw.Reset(conn)
	} else {
		res.Reused = true
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return c.fail(res, start, "set deadline", err)
	}

	c.head = appendHead(c.head[:0], cfg, j, oneShot)
	c.bw.Write(c.head) // errors are sticky and surface at Flush
	req := getRequest
	if j.kind == KindPost {
		req = postRequest
		c.bw.Write(postPayload[:j.size])
	}
	if err := c.bw.Flush(); err != nil {
		return c.fail(res, start, "write request", err)
	}

	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return c.fail(res, start, "read response", err)
	}
	res.Status = resp.StatusCode
	version := resp.Header.Get(cfg.VersionHeader)
	bodyVersion := version == "" && cfg.VersionFromBody
	switch {
	case j.kind == KindPost || bodyVersion:
		c.body, err = appendAll(c.body[:0], io.LimitReader(resp.Body, 256))
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
		}
		if bodyVersion {
			version = firstWord(c.body)
		}
	default:
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	res.Version = c.intern(version)
	if err != nil {
		return c.fail(res, start, "read body", err)
	}
	if oneShot || resp.Close {
		c.close()
	}
	res.Duration = time.Since(start)
	if j.kind == KindPost && res.Status/100 == 2 && !cfg.SkipEchoCheck {
		if err := checkEcho(c.body, j.size); err != nil {
			res.Err = err.Error()
			res.Class = ClassOther
			return res
		}
	}
	res.Class = statusClass(res.Status)
	return res
}

// fail completes res as a failure of operation op and drops the connection,
// which is in an unknown state.
func (c *client) fail(res Result, start time.Time, op string, err error) Result {
	c.close()
	res.Duration = time.Since(start)
	res.Err = op + ": " + err.Error()
	res.Class = classify(err)
	return res
}

func (c *client) intern(v string) string {
	if v == c.lastVersion {
		return c.lastVersion
	}
	c.lastVersion = v
	return v
}

// appendHead appends the request line and headers of j to b.
func appendHead(b []byte, cfg *Config, j job, connClose bool) []byte {
	switch j.kind {
	case KindPost:
		b = append(b, "POST "...)
		b = append(b, cfg.PostPath...)
		b = append(b, " HTTP/1.1\r\n"...)
	case KindSlow:
		b = append(b, "GET "...)
		b = append(b, cfg.SlowPath...)
		b = append(b, "?ms="...)
		b = strconv.AppendInt(b, j.slow.Milliseconds(), 10)
		b = append(b, " HTTP/1.1\r\n"...)
	default:
		b = append(b, "GET "...)
		b = append(b, cfg.Path...)
		b = append(b, " HTTP/1.1\r\n"...)
	}
	b = append(b, "Host: "...)
	b = append(b, cfg.Host...)
	b = append(b, "\r\nUser-Agent: baton-loadgen\r\n"...)
	if j.kind == KindPost {
		b = append(b, "Content-Type: application/octet-stream\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(j.size), 10)
		b = append(b, "\r\n"...)
	}
	if connClose {
		b = append(b, "Connection: close\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendAll appends everything r yields to b.
func appendAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// checkEcho checks that an /echo answer ("<version> <n>\n") reports sent
// bytes.
func checkEcho(body []byte, sent int) error {
	s := strings.TrimSuffix(string(body), "\n")
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return fmt.Errorf("echo: unexpected answer %q: want \"<version> <bytes>\"", s)
	}
	got, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return fmt.Errorf("echo: unexpected answer %q: want \"<version> <bytes>\"", s)
	}
	if got != sent {
		return fmt.Errorf("echo: sent %d bytes, server read %d", sent, got)
	}
	return nil
}

// firstWord returns the first space-separated word of the first 64 bytes of
// b, for a version written at the start of a body.
func firstWord(b []byte) string {
	b = b[:min(len(b), 64)]
	if i := bytes.IndexAny(b, " \t\r\n"); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
