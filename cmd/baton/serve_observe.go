package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/metrics"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/switcher"
)

// observeConfig holds the observability flags of 'baton serve'. The log
// format and level are serveConfig's own.
type observeConfig struct {
	MetricsAddr string
	AccessLog   bool
}

func (c *observeConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.MetricsAddr, "metrics", "", "also serve GET /metrics, without auth, on this listen `address` (e.g. 127.0.0.1:9901); it is always on the admin API, behind its auth")
	fs.BoolVar(&c.AccessLog, "access-log", false, "log one line per proxied request at info level (method, host, path without query, status, duration)")
}

// observability is what 'baton serve' exports about itself: the metrics,
// served on the admin API and optionally on their own listener, and the
// optional access log.
type observability struct {
	cfg     observeConfig
	metrics *metrics.Metrics
	logger  *slog.Logger
}

func newObservability(cfg observeConfig, logger *slog.Logger) (*observability, error) {
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return nil, usageError(fmt.Errorf("--metrics %q: want host:port", cfg.MetricsAddr))
		}
	}
	return &observability{
		cfg:     cfg,
		metrics: metrics.New(metrics.Options{Version: version}),
		logger:  logger,
	}, nil
}

// proxyObserver returns the observer for the proxy of a service: its
// metrics, and the access log if asked for.
func (o *observability) proxyObserver(m *metrics.Service) proxy.Observer {
	if !o.cfg.AccessLog {
		return m
	}
	return teeObserver{m, accessLog{o.logger}}
}

// track tells a service's metrics which upstream is which colour.
func track(m *metrics.Service, rt *router) {
	for c, u := range rt.ups {
		m.Track(switcher.Color(c), u)
	}
}

// listen opens the --metrics listener with listen, the function that
// opens (or inherits, across an upgrade of baton) every listener; nil if
// the flag is not set.
func (o *observability) listen(listen func(name, addr string) (net.Listener, error)) (net.Listener, error) {
	if o.cfg.MetricsAddr == "" {
		return nil, nil
	}
	return listen("metrics", o.cfg.MetricsAddr)
}

// serve serves /metrics on ln (if not nil) until the returned function is
// called.
func (o *observability) serve(ln net.Listener) (stop func()) {
	if ln == nil {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metrics.Handler())
	srv := &http.Server{
		Handler: mux,
		// A scrape is one small GET; nothing here needs to be slow.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(o.logger.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.logger.Error("metrics server stopped", "err", err)
		}
	}()
	o.logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	}
}

// teeObserver tells two observers, in order.
type teeObserver struct{ a, b proxy.Observer }

func (t teeObserver) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	t.a.RequestDone(u, r, status, d)
	t.b.RequestDone(u, r, status, d)
}

func (t teeObserver) UpstreamError(u *proxy.Upstream, kind string, retried bool) {
	t.a.UpstreamError(u, kind, retried)
	t.b.UpstreamError(u, kind, retried)
}

// maxLoggedPath bounds the path in an access-log line.
const maxLoggedPath = 512

// accessLog writes one line per proxied request. It logs the path but not
// the query string, which often carries tokens, and no header: a client's
// Authorization or Cookie header never reaches the log.
type accessLog struct{ logger *slog.Logger }

func (a accessLog) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	remote := r.RemoteAddr
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	path := r.Path
	if len(path) > maxLoggedPath {
		path = path[:maxLoggedPath] + "…"
	}
	a.logger.LogAttrs(context.Background(), slog.LevelInfo, "access",
		slog.String("remote", remote),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", path),
		slog.String("proto", r.Proto),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("upstream", u.Name()),
	)
}

// UpstreamError does nothing: the proxy logs upstream errors itself.
func (accessLog) UpstreamError(*proxy.Upstream, string, bool) {}
