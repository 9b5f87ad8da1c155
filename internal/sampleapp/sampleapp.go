// Package sampleapp is a small, real HTTP application that baton's end-to-end
// tests, demo and benchmarks run as a separate process behind the proxy
// (examples/app is its main package).
//
// It imitates the upstreams baton is built for: it can take a while to start
// (--startup-delay, slept before listening, like a JVM warming up), it can be
// made unhealthy from outside (--fail-health-file), and by default it dies on
// SIGTERM or SIGINT the way a default Spring Boot app does: the listener and
// every connection are closed at once and requests in flight are dropped.
// With --graceful it instead stops accepting, finishes what is in flight
// (up to GracefulTimeout) and then exits. For fault-injection tests it can
// also misbehave on purpose: ignore SIGTERM (--ignore-term), crash a while
// after it starts listening (--crash-after), or pass its health checks
// while failing every real request (--fail-requests).
//
// Every response carries the X-App-Version header so that a client can tell
// which colour answered it. The routes are listed on Handler.
package sampleapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Server timeouts. There is no ReadTimeout or WriteTimeout: /slow, /sse and
// /big legitimately keep a request open for a long time.
const (
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout is how long a keep-alive connection may sit idle. It is
	// longer than the proxy's upstream idle timeout is expected to be, so that
	// the proxy, not the app, closes idle connections (the side that closes
	// first can race a new request on the same connection).
	IdleTimeout = 120 * time.Second
	// GracefulTimeout bounds the drain of --graceful on SIGTERM or SIGINT.
	GracefulTimeout = 30 * time.Second
)

// Main runs the sample app with command-line arguments args (without the
// program name) and returns the process exit code: 0 after a signal or
// --help, 1 when the app cannot listen or serve, 2 on a usage error.
//
// Flags:
//
//	--addr ADDR              listen address (default 127.0.0.1:$PORT, or
//	                         127.0.0.1:8080 when PORT is unset)
//	--port N                 shorthand for --addr 127.0.0.1:N
//	--version V              version to answer with (default v1)
//	--startup-delay D        sleep D before listening (default 0)
//	--graceful               drain on SIGTERM/SIGINT instead of dropping
//	--fail-health-file PATH  /health answers 500 while PATH exists
//	--fail-requests          every route but /health and /stats answers 500
//	--fail-file PATH         the same, while PATH exists
//	--ignore-term            ignore SIGTERM and SIGINT: only SIGKILL stops it
//	--crash-after D          D after listening, drop every connection and
//	                         exit with status 3, as a crash would
//
// Once listening it prints "sampleapp <version> listening on <addr> pid
// <pid>" to stdout; logs go to stderr. On SIGTERM or SIGINT, Main returns
// at once after closing the listener and every connection, unless
// --graceful is set; the caller is expected to os.Exit with the result, which
// ends any handler still running. A second signal during a graceful drain
// kills the process with the default signal action.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		// Restore the default action so that a second signal kills a stuck drain.
		stop()
	}()
	return run(ctx, args, stdout, stderr, os.Getenv)
}

// config is the parsed command line.
type config struct {
	addr           string
	version        string
	startupDelay   time.Duration
	graceful       bool
	failHealthFile string
	failRequests   bool
	failFile       string
	ignoreTerm     bool
	crashAfter     time.Duration
}

// crashExitCode is the exit status of --crash-after.
const crashExitCode = 3

// errCrash is what serve returns when --crash-after fires.
var errCrash = errors.New("crash (--crash-after)")

// errFlagParse marks an error that the flag package has already reported
// on stderr.
var errFlagParse = errors.New("bad flag")

// parseFlags parses args. It returns flag.ErrHelp for --help, an error
// wrapping errFlagParse when the flag package rejected args (and printed
// why), and any other error for invalid values, all of them joined.
func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "", "listen `address` (default 127.0.0.1:$PORT, or 127.0.0.1:8080 when PORT is unset)")
	port := fs.Int("port", 0, "shorthand for --addr 127.0.0.1:`N`")
	fs.StringVar(&c.version, "version", "v1", "`version` to answer with, in the body and the X-App-Version header")
	fs.DurationVar(&c.startupDelay, "startup-delay", 0, "sleep this long before listening, to imitate a slow start")
	fs.BoolVar(&c.graceful, "graceful", false, "on SIGTERM/SIGINT finish requests in flight (up to 30s) instead of dropping them")
	fs.StringVar(&c.failHealthFile, "fail-health-file", "", "GET /health answers 500 while this `file` exists (empty: never)")
	fs.BoolVar(&c.failRequests, "fail-requests", false, "answer 500 to every request but GET /health and /stats: healthy to a probe, broken to users")
	fs.StringVar(&c.failFile, "fail-file", "", "like --fail-requests, but only while this `file` exists (empty: never)")
	fs.BoolVar(&c.ignoreTerm, "ignore-term", false, "ignore SIGTERM and SIGINT, as a hung process does: only SIGKILL stops it")
	fs.DurationVar(&c.crashAfter, "crash-after", 0, "this long after listening, drop every connection and exit with status 3 (0: never)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("%w: %w", errFlagParse, err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: the app takes only flags", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	switch {
	case set["port"] && set["addr"]:
		errs = append(errs, errors.New("--port and --addr both given: use one"))
	case set["port"]:
		if *port < 0 || *port > 65535 {
			errs = append(errs, fmt.Errorf("--port %d: want 0..65535", *port))
		}
		c.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	case !set["addr"]:
		c.addr = "127.0.0.1:8080"
		if p := getenv("PORT"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n > 65535 {
				errs = append(errs, fmt.Errorf("environment PORT=%q: want a port number 0..65535", p))
			}
			c.addr = net.JoinHostPort("127.0.0.1", p)
		}
	}
	if c.version == "" {
		errs = append(errs, errors.New("--version is empty"))
	}
	if c.startupDelay < 0 {
		errs = append(errs, fmt.Errorf("--startup-delay %v is negative", c.startupDelay))
	}
	if c.crashAfter < 0 {
		errs = append(errs, fmt.Errorf("--crash-after %v is negative", c.crashAfter))
	}
	if c.ignoreTerm && c.graceful {
		errs = append(errs, errors.New("--ignore-term and --graceful contradict each other"))
	}
	return c, errors.Join(errs...)
}

// run is Main with the signal context and the environment injected, so that
// tests can run the app in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parseFlags(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errFlagParse) {
		return 2 // the flag package has printed the error and the usage
	}
	if err != nil {
		fmt.Fprintf(stderr, "sampleapp: %v\nRun with --help for usage.\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil)).With("version", c.version)
	if c.ignoreTerm {
		// SIG_IGN, not a handler that does nothing: a second signal must
		// not find the default action restored either.
		signal.Ignore(syscall.SIGTERM, os.Interrupt)
		ctx = context.WithoutCancel(ctx)
		logger.Info("ignoring SIGTERM and SIGINT")
	}
	err = serve(ctx, c, stdout, logger)
	if errors.Is(err, errCrash) {
		fmt.Fprintf(stderr, "sampleapp: %v\n", err)
		return crashExitCode
	}
	if err != nil {
		fmt.Fprintf(stderr, "sampleapp: %v\n", err)
		return 1
	}
	return 0
}

// serve waits out the start-up delay, listens, and serves until ctx is done.
func serve(ctx context.Context, c config, stdout io.Writer, logger *slog.Logger) error {
	if c.startupDelay > 0 {
		logger.Info("startup_delay", "delay", c.startupDelay)
		t := time.NewTimer(c.startupDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			logger.Info("signal_during_startup")
			return nil
		}
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.addr, err)
	}
	h := Handler(c.version, c.failHealthFile)
	if c.failRequests {
		h = failRequests(h, c.version)
	}
	if c.failFile != "" {
		h = failWhileFileExists(h, c.version, c.failFile)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "sampleapp %s listening on %s pid %d\n", c.version, ln.Addr(), os.Getpid())
	logger.Info("listening", "addr", ln.Addr().String(), "graceful", c.graceful)

	var crash <-chan time.Time
	if c.crashAfter > 0 {
		crash = time.After(c.crashAfter)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-crash:
		logger.Info("crash_now")
		_ = srv.Close()
		return errCrash
	case <-ctx.Done():
	}
	if !c.graceful {
		// Like a default Spring Boot app: drop everything in flight.
		logger.Info("signal_exit_now")
		_ = srv.Close()
		return nil
	}
	logger.Info("signal_graceful_shutdown", "timeout", GracefulTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), GracefulTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("graceful_shutdown_incomplete", "err", err)
		_ = srv.Close()
	}
	logger.Info("stopped")
	return nil
}

// failRequests answers 500 to everything but the health check and /stats.
func failRequests(h http.Handler, version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || r.URL.Path == "/stats" {
			h.ServeHTTP(w, r)
			return
		}
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		}
		w.Header().Set(VersionHeader, version)
		writeText(w, http.StatusInternalServerError, "fail\n")
	})
}
