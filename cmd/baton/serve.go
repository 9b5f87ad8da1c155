package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/graceful"
	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/registry"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

const serveSynopsis = `Usage: baton serve [flags]

Runs the public reverse proxy and the admin API. Traffic goes to the live
colour (blue or green); 'baton switch' moves it to the other one after health
checks pass, drains the old one and stops its process.

Environment:
  BATON_ADMIN_TOKEN       admin API bearer token (or --admin-token-file)
  BATON_ADMIN_TOKEN_FILE  file holding the token (same as --admin-token-file)
  BATON_STATE_DIR         state directory (same as --state-dir)`

// serveConfig holds everything 'baton serve' is told on its command line
// and in its --config file.
type serveConfig struct {
	ConfigFile    string
	HTTPAddr      string
	AdminAddr     string
	AdminTLS      adminTLSConfig // --admin-tls-cert/key: serve_admin.go
	StateDir      string
	TokenFile     string
	ShutdownGrace time.Duration
	LogFormat     string
	LogLevel      string
	Edge          edgeConfig    // TLS, limits, client IPs: serve_edge.go
	Observe       observeConfig // metrics listener, access log: serve_observe.go
	Upgrade       upgradeConfig // baton's own upgrade: serve_upgrade.go
	// serviceConfig holds the per-service flags: the one service of a
	// baton without a config file, or what every service of the file
	// starts from (serve_services.go).
	serviceConfig
}

// serviceConfig holds the settings of one service: its apps, health
// checks, drain, launcher and routing.
type serviceConfig struct {
	Name            string   // state.DefaultService without a config file
	Hosts           []string // config file only; none: every host
	PathPrefix      string   // config file only
	StripPrefix     bool     // config file only
	Blue, Green     string
	HealthPath      string
	HealthPasses    int
	HealthInterval  time.Duration
	HealthDeadline  time.Duration
	HealthTimeout   time.Duration
	DrainTimeout    time.Duration
	StopTimeout     time.Duration
	NoStop          bool
	RetryTimeout    time.Duration
	UpstreamTimeout time.Duration
	MaxBodySize     sizeFlag
	Launch          launchConfig // deploys: --run, --ssh: serve_launch.go

	// TLSCert and TLSKey are the service's own certificate files (config
	// file only: tls_cert, tls_key); without them its hosts get ACME's
	// certificates (--acme) or the default one (--tls-cert).
	TLSCert, TLSKey string
	where           string // "FILE:LINE: service NAME", for errors found after parsing
}

func (c *serveConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.ConfigFile, "config", os.Getenv("BATON_CONFIG"), "YAML `file` with the settings and the services (docs/services.md); a flag given here wins over it [$BATON_CONFIG]")
	fs.StringVar(&c.HTTPAddr, "http", ":80", "public HTTP listen `address`")
	c.Edge.flags(fs)
	c.serviceConfig.appFlags(fs)
	fs.StringVar(&c.AdminAddr, "admin", "127.0.0.1:9900", "admin API listen `address` (loopback unless a token is set)")
	c.AdminTLS.flags(fs)
	fs.StringVar(&c.StateDir, "state-dir", envOr("BATON_STATE_DIR", "/var/lib/baton"), "`directory` for the state file [$BATON_STATE_DIR]")
	fs.StringVar(&c.TokenFile, "admin-token-file", os.Getenv("BATON_ADMIN_TOKEN_FILE"), "`file` holding the admin bearer token [$BATON_ADMIN_TOKEN_FILE; or the token in $BATON_ADMIN_TOKEN]")
	c.serviceConfig.switchFlags(fs)
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 30*time.Second, "on SIGTERM, how long to let requests in flight finish")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	c.Observe.flags(fs)
	c.Launch.flags(fs)
	c.Upgrade.flags(fs)
}

// appFlags and switchFlags register the per-service flags (with
// Launch.flags): every one of them is also a key of a service in the
// config file.
func (c *serviceConfig) appFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Blue, "blue", "127.0.0.1:8080", "blue app `host:port`")
	fs.StringVar(&c.Green, "green", "127.0.0.1:8081", "green app `host:port`")
}

func (c *serviceConfig) switchFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.HealthPath, "health-path", health.DefaultPath, "app health check `path`; only a 2xx answer counts as healthy")
	fs.IntVar(&c.HealthPasses, "health-passes", switcher.DefaultHealthPasses, "consecutive passing checks needed before a swap")
	fs.DurationVar(&c.HealthInterval, "health-interval", switcher.DefaultHealthInterval, "time between health checks during a switch")
	fs.DurationVar(&c.HealthDeadline, "health-deadline", switcher.DefaultHealthDeadline, "give up a switch if the app is not healthy by then")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", health.DefaultTimeout, "timeout of one health check")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", switcher.DefaultDrainTimeout, "how long to wait for requests in flight on the old colour")
	fs.DurationVar(&c.StopTimeout, "stop-timeout", switcher.DefaultStopTimeout, "time between SIGTERM and SIGKILL of the old app")
	fs.BoolVar(&c.NoStop, "no-stop", false, "leave the old app running after the drain")
	fs.DurationVar(&c.RetryTimeout, "retry-timeout", proxy.DefaultRetryTimeout, "how long to retry a request that reached no app (connection refused) before a 502; negative disables")
	fs.Var(&c.MaxBodySize, "max-body-size", "refuse request bodies larger than this `size` with 413, e.g. 10m (0: no limit)")
	fs.DurationVar(&c.UpstreamTimeout, "upstream-timeout", 0, "answer 504 if the app has not sent its response headers this long after a request was sent to it (0: wait as long as the client does); response bodies are not bounded")
}

func (c *serveConfig) validate() error {
	var errs []error
	for name, addr := range map[string]string{"--http": c.HTTPAddr, "--admin": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, addr))
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := c.Edge.validate(c.HTTPAddr); err != nil {
		errs = append(errs, err)
	}
	if err := c.AdminTLS.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validate reports every problem with one service's settings.
func (c *serviceConfig) validate() error {
	var errs []error
	for name, addr := range map[string]string{"--blue": c.Blue, "--green": c.Green} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, addr))
		}
	}
	if c.Blue == c.Green {
		errs = append(errs, fmt.Errorf("--blue and --green are both %s", c.Blue))
	}
	if !strings.HasPrefix(c.HealthPath, "/") {
		errs = append(errs, fmt.Errorf("--health-path %q must start with /", c.HealthPath))
	}
	if c.HealthPasses < 1 {
		errs = append(errs, fmt.Errorf("--health-passes %d: want at least 1", c.HealthPasses))
	}
	for name, d := range map[string]time.Duration{"--health-interval": c.HealthInterval, "--health-deadline": c.HealthDeadline,
		"--health-timeout": c.HealthTimeout, "--drain-timeout": c.DrainTimeout, "--stop-timeout": c.StopTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", name, d))
		}
	}
	if c.UpstreamTimeout < 0 {
		errs = append(errs, fmt.Errorf("--upstream-timeout %s: want 0 (off) or a positive duration", c.UpstreamTimeout))
	}
	if err := c.Launch.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("serve", serveSynopsis, stdout)
	cfg.flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	file, err := loadConfigFile(fs, &cfg)
	if err != nil {
		return usageError(err)
	}
	if err := cfg.validate(); err != nil {
		return usageError(err)
	}
	services, err := serviceConfigs(args, &cfg, file)
	if err != nil {
		return usageError(err)
	}
	token, err := readToken(cfg.TokenFile)
	if err != nil {
		return err
	}
	if err := admin.CheckListenAddr(cfg.AdminAddr, token != ""); err != nil {
		return usageError(err)
	}
	logger := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	// A proxy's live heap is tiny and every request allocates a little, so
	// Go's default GOGC=100 collects very often; 200 buys back ~2 µs of CPU
	// per request for ~4 MB of RSS (bench/RESULTS.md). GOGC in the
	// environment still wins.
	proxy.SetGCPercentDefault()
	return serve(ctx, cfg, args, topLevel(fs), services, token, logger)
}

// serve runs until ctx is done, then shuts the servers down gracefully. App
// processes are left running: they are not baton's to kill on its own exit.
func serve(ctx context.Context, cfg serveConfig, args []string, startedTopLevel map[string]string, services []serviceConfig, token string, logger *slog.Logger) error {
	store, err := state.NewStore(cfg.StateDir)
	if err != nil {
		return err
	}
	// The upgrader comes first: it knows whether this process inherits its
	// sockets from a previous baton (or from systemd).
	upg, err := cfg.Upgrade.open()
	if err != nil {
		return err
	}
	defer upg.Stop()
	obs, err := newObservability(cfg.Observe, logger)
	if err != nil {
		return err
	}
	// Every request is routed by one table (host, then path) to its
	// service; the registry builds the services and swaps the table.
	router := proxy.NewRouter(nil, logger, obs.metrics)
	env := &serviceEnv{ctx: ctx, edge: cfg.Edge, store: store, obs: obs, logger: logger}
	reg := registry.New(router, env.build)
	if _, err := reg.Apply(specs(services)); err != nil {
		return err
	}
	defer func() {
		for _, e := range reg.List() {
			e.Service.Close()
		}
	}()

	// All listeners (public and admin) are opened by startEdge, in one
	// place, so that they can later be handed over to a new baton process
	// or taken from systemd.
	pub, err := startEdge(cfg, certsConfig(cfg.Edge, services), router, logger, upg.Listen)
	if err != nil {
		return err
	}
	defer pub.close()
	metricsLn, err := obs.listen(upg.Listen) // nil without --metrics
	if err != nil {
		return err
	}
	stopMetrics := obs.serve(metricsLn)
	defer stopMetrics()
	var su *selfUpgrade
	var admUpgrade admin.Upgrader
	if upg != nil {
		su = &selfUpgrade{upg: upg, reg: reg, logger: logger}
		admUpgrade = su
	}
	var (
		reload  admin.Reloader
		stopper admin.ServiceStopper
	)
	if cfg.ConfigFile != "" {
		removed := &removedServices{}
		rememberRemoved(env, cfg.serviceConfig, services, removed)
		reload = &configReloader{args: args, started: startedTopLevel, reg: reg, store: store, removed: removed, metrics: obs.metrics,
			edge: cfg.Edge, certs: pub.certs}
		stopper = removed
	}
	adm := admin.New(admin.Config{Token: token, Version: version, Logger: logger, Metrics: obs.metrics.Handler(), Upgrade: admUpgrade, Reload: reload, Stopper: stopper,
		Warnings: func() []string { return warnings(reg) }},
		adminServices{reg: reg, stateDir: store.Dir()}).NewHTTPServer()

	monitorCtx, stopMonitor := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMonitor()
	serveAdmin, err := cfg.AdminTLS.serveAdmin(monitorCtx, adm, logger)
	if err != nil {
		return err
	}

	// The drainer tracks every connection so that a stop or an upgrade
	// can let clients leave cleanly instead of resetting keep-alives.
	drainer := graceful.New()
	pub.attachDrainer(drainer)
	drainer.Attach(adm)
	for _, ln := range []net.Listener{pub.lns.HTTP, pub.lns.HTTPS, pub.lns.Admin} {
		if ln != nil {
			drainer.Listener(ln)
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- pub.run() }()
	go func() { errc <- serveAdmin(pub.lns.Admin) }()
	if err := upg.Ready(); err != nil {
		logger.Error("could not tell the previous baton we are ready", "err", err)
	}
	if su != nil {
		go su.upgradeOnSignal(monitorCtx)
	}
	attrs := []any{"version", version, "admin", pub.lns.Admin.Addr().String(), "state", store.Path(), "admin_auth", token != "", "admin_tls", cfg.AdminTLS.Cert != ""}
	if all := reg.List(); len(all) == 1 && all[0].Spec.Name == state.DefaultService {
		only := all[0].Service
		attrs = append(attrs, "live", only.sw.Live(), "blue", only.cfg.Blue, "green", only.cfg.Green)
	} else {
		attrs = append(attrs, "services", describeServices(reg))
	}
	logger.Info("baton serving", append(pub.logAttrs(), attrs...)...)

	select {
	case err = <-errc:
	case <-ctx.Done():
	case <-upg.Exit():
		logger.Info("a new baton took over the sockets")
	}
	// No more upgrades; without one, this releases the upgrader's copies of
	// the listening sockets so that the kernel stops queueing connections
	// nobody will accept.
	upg.Stop()
	logger.Info("shutting down: finishing requests in flight", "grace", cfg.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if derr := drainer.Drain(sctx, graceful.DefaultIdleClose, func() int64 { return inFlight(reg) }); derr != nil {
		logger.Warn("drain deadline passed with connections still open", "open", drainer.Open(), "err", derr)
	}
	var wg sync.WaitGroup
	for _, s := range append(pub.httpServers(), adm) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if serr := s.Shutdown(sctx); serr != nil {
				logger.Warn("shutdown deadline passed; closing remaining connections", "err", serr)
				s.Close()
			}
		}()
	}
	wg.Wait()
	pub.closeFast()
	logger.Info("baton stopped")
	return err
}

func serveOn(s *http.Server, ln net.Listener, name string) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}

// router adapts a proxy.Handler and its two upstreams to switcher.Router
// (and switcher.TrafficCounter, when traffic is set).
type router struct {
	h       *proxy.Handler
	ups     [2]*proxy.Upstream
	traffic *trafficCounts
}

func newRouter(h *proxy.Handler, blue, green string) (*router, error) {
	r := &router{h: h}
	for _, c := range switcher.Colors {
		addr := blue
		if c == switcher.Green {
			addr = green
		}
		u, err := proxy.NewUpstream(c.String(), addr)
		if err != nil {
			return nil, err
		}
		r.ups[c] = u
	}
	return r, nil
}

func (r *router) Route(c switcher.Color) {
	if r.traffic != nil {
		r.traffic.reset(c)
	}
	r.h.Route(r.ups[c])
}

func (r *router) Traffic(c switcher.Color) switcher.Traffic {
	if r.traffic == nil {
		return switcher.Traffic{}
	}
	return r.traffic.traffic(c)
}

func (r *router) InFlight(c switcher.Color) int64 { return r.ups[c].InFlight() }
func (r *router) CloseIdle(c switcher.Color)      { r.ups[c].CloseIdleConnections() }

// EndStreams implements switcher.StreamEnder.
func (r *router) EndStreams(ctx context.Context, c switcher.Color) int {
	return r.ups[c].EndStreams(ctx)
}

// readToken returns the admin token from file if given, else from
// $BATON_ADMIN_TOKEN. An empty or unreadable file is an error, not "no token".
func readToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(os.Getenv("BATON_ADMIN_TOKEN")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", file)
	}
	return tok, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
