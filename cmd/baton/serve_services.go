package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/config"
	"github.com/batonproxy/baton/edge"
	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/metrics"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/registry"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// The services of 'baton serve': without --config, the flags describe one
// service, named state.DefaultService, that takes every host. With a
// config file that has services:, each entry is a service whose settings
// are, from strongest to weakest: the command line, its own entry, the
// file's top level, the flags' defaults. Each service's settings are
// parsed by the same flag set as the command line's (config.Apply), so a
// value means the same wherever it is written.

// routingKeys are the keys a service has that no flag has.
var routingKeys = []string{"hosts", "path_prefix", "strip_prefix"}

// serviceTLSKeys are the keys of a service's own certificate. At the top
// level (--tls-cert, --tls-key) they name the default certificate; in a
// service's entry, the certificate of that service's hosts.
var serviceTLSKeys = []string{"tls_cert", "tls_key"}

// perServiceFlags returns the names of the flags that are a service's own
// (and so may stand in a service's entry of the file).
func perServiceFlags() map[string]bool {
	fs := pflag.NewFlagSet("", pflag.ContinueOnError)
	var c serviceConfig
	c.appFlags(fs)
	c.switchFlags(fs)
	c.Launch.flags(fs)
	names := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
	return names
}

// loadConfigFile applies the top-level settings of cfg.ConfigFile to fs
// (where the command line did not set them) and returns the file, or nil
// without --config.
func loadConfigFile(fs *pflag.FlagSet, cfg *serveConfig) (*config.File, error) {
	if cfg.ConfigFile == "" {
		return nil, nil
	}
	file, err := config.Load(cfg.ConfigFile)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, s := range file.Settings {
		if s.Key == "config" {
			errs = append(errs, config.Errorf(file.Path, s.Line, "config: a config file cannot name another"))
		}
		if slices.Contains(routingKeys, s.Key) {
			errs = append(errs, config.Errorf(file.Path, s.Line, "%s belongs to a service: put it under services:", s.Key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, svc := range file.Services {
		for _, key := range serviceTLSKeys {
			if _, ok := svc.Setting(key); ok {
				cfg.Edge.serviceCerts = true
			}
		}
	}
	return file, config.Apply(fs, file.Settings, file.Path, "", fs.Changed)
}

// serviceConfigs returns the settings of every service: the flags' one
// service, or those of file. args is the command line, parsed again over
// each service's settings so that it wins over them.
func serviceConfigs(args []string, cfg *serveConfig, file *config.File) ([]serviceConfig, error) {
	if file == nil || !file.HasServices {
		sc := cfg.serviceConfig
		sc.Name = state.DefaultService
		if err := sc.validate(); err != nil {
			return nil, err
		}
		return []serviceConfig{sc}, nil
	}
	if len(file.Services) == 0 {
		return nil, config.Errorf(file.Path, 0, "services: is empty; name at least one service, or leave the key out to serve the flags' one app")
	}
	own := perServiceFlags()
	var (
		out    []serviceConfig
		routed []serviceConfig // out, and the routing of those that failed: every problem is reported at once
		errs   []error
	)
	for _, svc := range file.Services {
		sc, err := serviceConfigOf(args, file, svc, own)
		if err != nil {
			errs = append(errs, err)
			if rc, ok := routingOf(file, svc); ok {
				routed = append(routed, rc)
			}
			continue
		}
		out = append(out, sc)
		routed = append(routed, sc)
	}
	errs = append(errs, checkRoutes(file, routed), checkAddrs(file, out))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// routingOf returns only the routing settings of a service whose other
// settings have problems, so that its route conflicts are reported with
// them; ok is false if the routing settings have problems too (reported by
// serviceConfigOf already).
func routingOf(file *config.File, svc config.Service) (sc serviceConfig, ok bool) {
	fs := pflag.NewFlagSet("routing", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	fs.StringSliceVar(&sc.Hosts, "hosts", nil, "")
	fs.StringVar(&sc.PathPrefix, "path-prefix", "", "")
	fs.BoolVar(&sc.StripPrefix, "strip-prefix", false, "")
	var routing []config.Setting
	for _, s := range svc.Settings {
		if slices.Contains(routingKeys, s.Key) {
			routing = append(routing, s)
		}
	}
	sc.Name = svc.Name
	return sc, config.Apply(fs, routing, file.Path, "", nil) == nil
}

// checkAddrs refuses two services (or two colours) on one app address:
// their deploys would stop each other's apps.
func checkAddrs(file *config.File, scs []serviceConfig) error {
	type owner struct{ service, color string }
	seen := map[string]owner{}
	var errs []error
	line := map[string]int{}
	for _, svc := range file.Services {
		line[svc.Name] = svc.Line
	}
	for _, sc := range scs {
		for _, c := range []owner{{sc.Name, "blue"}, {sc.Name, "green"}} {
			addr := sc.Blue
			if c.color == "green" {
				addr = sc.Green
			}
			if prev, dup := seen[addr]; dup && prev.service != sc.Name {
				errs = append(errs, config.Errorf(file.Path, line[sc.Name], "service %s: %s %s is also service %s's %s; each service needs apps of its own",
					sc.Name, c.color, addr, prev.service, prev.color))
				continue
			}
			seen[addr] = c
		}
	}
	return errors.Join(errs...)
}

// serviceConfigOf parses one service's entry.
func serviceConfigOf(args []string, file *config.File, svc config.Service, own map[string]bool) (serviceConfig, error) {
	var errs []error
	what := "service " + svc.Name
	for _, s := range svc.Settings {
		if name := s.FlagName(); !own[name] && !slices.Contains(routingKeys, s.Key) && !slices.Contains(serviceTLSKeys, s.Key) {
			if fs := newServeFlags(new(serveConfig)); fs.Lookup(name) != nil {
				errs = append(errs, config.Errorf(file.Path, s.Line, "%s: %s is not a setting of one service; put it at the top level", what, s.Key))
			}
		}
	}
	var c serveConfig
	fs := newServeFlags(&c)
	fs.StringSliceVar(&c.Hosts, "hosts", nil, "")
	fs.StringVar(&c.PathPrefix, "path-prefix", "", "")
	fs.BoolVar(&c.StripPrefix, "strip-prefix", false, "")
	if err := config.Apply(fs, file.Settings, file.Path, "", nil); err != nil {
		errs = append(errs, err) // reported by loadConfigFile already; here for completeness
	}
	if err := errors.Join(errs...); err != nil {
		return serviceConfig{}, err
	}
	// The service's own certificate is read by the flags --tls-cert and
	// --tls-key parse, but kept apart from the top level's: the command
	// line's --tls-cert is the default certificate, not this one.
	var ownTLS, otherSettings []config.Setting
	for _, s := range svc.Settings {
		if slices.Contains(serviceTLSKeys, s.Key) {
			ownTLS = append(ownTLS, s)
		} else {
			otherSettings = append(otherSettings, s)
		}
	}
	var tlsFiles serveConfig
	tfs := newServeFlags(&tlsFiles)
	if err := config.Apply(fs, otherSettings, file.Path, what, nil); err != nil {
		errs = append(errs, err)
	}
	if err := config.Apply(tfs, ownTLS, file.Path, what, nil); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return serviceConfig{}, err
	}
	if err := fs.Parse(args); err != nil {
		return serviceConfig{}, err // parsed once already: not reached
	}
	sc := c.serviceConfig
	sc.Name = svc.Name
	sc.TLSCert, sc.TLSKey = tlsFiles.Edge.TLSCert, tlsFiles.Edge.TLSKey
	sc.where = fmt.Sprintf("%s:%d: %s", file.Path, svc.Line, what)
	var lines []error
	if err := sc.validate(); err != nil {
		eachError(err, func(e error) { lines = append(lines, config.Errorf(file.Path, svc.Line, "%s: %v", what, e)) })
	}
	if (sc.TLSCert == "") != (sc.TLSKey == "") {
		lines = append(lines, config.Errorf(file.Path, svc.Line, "%s: tls_cert and tls_key go together", what))
	}
	if c.Edge.ACME && sc.TLSCert == "" {
		line := svc.Line
		if s, ok := svc.Setting("hosts"); ok {
			line = s.Line
		}
		for _, h := range sc.Hosts {
			switch err := edge.CheckDomain(h); {
			case strings.HasPrefix(h, "*."):
				lines = append(lines, config.Errorf(file.Path, line, "%s: host %s: acme cannot get a wildcard certificate (it needs a DNS challenge, which baton does not do); give the service tls_cert and tls_key, or name its hosts", what, h))
			case err != nil:
				lines = append(lines, config.Errorf(file.Path, line, "%s: host %s: acme cannot get a certificate for it (%v); give the service tls_cert and tls_key", what, h, err))
			}
		}
	}
	if err := errors.Join(lines...); err != nil {
		return serviceConfig{}, err
	}
	return sc, nil
}

// newServeFlags returns a flag set with every flag of 'baton serve', bound
// to c.
func newServeFlags(c *serveConfig) *pflag.FlagSet {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	c.flags(fs)
	return fs
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// checkRoutes checks the routing of every service (hosts, prefixes, two
// services claiming the same) by proxy's own rules, and puts each problem
// on the line of the service it is about.
func checkRoutes(file *config.File, scs []serviceConfig) error {
	routes := make([]proxy.Route, len(scs))
	for i, sc := range scs {
		routes[i] = proxy.Route{Service: sc.Name, Hosts: sc.Hosts, PathPrefix: sc.PathPrefix, StripPrefix: sc.StripPrefix, Handler: proxy.NewHandler(proxy.Options{})}
	}
	_, err := proxy.NewRouteTable(routes)
	if err == nil {
		return nil
	}
	line := map[string]int{}
	for _, svc := range file.Services {
		line[svc.Name] = svc.Line
		if s, ok := svc.Setting("hosts"); ok {
			line[svc.Name] = s.Line
		}
	}
	var errs []error
	eachError(err, func(e error) {
		var re *proxy.RouteError
		if errors.As(e, &re) {
			errs = append(errs, config.Errorf(file.Path, line[re.Service], "%v", re))
			return
		}
		errs = append(errs, e)
	})
	return errors.Join(errs...)
}

// eachError calls fn for each error joined in err (errors.Join), or err.
func eachError(err error, fn func(error)) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			eachError(e, fn)
		}
		return
	}
	fn(err)
}

// spec returns the registry's view of a service's settings: its routing,
// and the rest to compare across reloads.
func (sc serviceConfig) spec() registry.Spec {
	settings := sc
	settings.Hosts, settings.PathPrefix, settings.StripPrefix = nil, "", false
	settings.Launch.warnings = nil // what a running service found, not a setting
	// The certificate is the edge's to serve (certsConfig): a new one
	// does not rebuild the service, and where it was written is no setting.
	settings.TLSCert, settings.TLSKey, settings.where = "", "", ""
	return registry.Spec{Name: sc.Name, Hosts: sc.Hosts, PathPrefix: sc.PathPrefix, StripPrefix: sc.StripPrefix, Settings: settings}
}

// dir is the service's directory for releases, logs and uploads: the state
// directory itself for the default service (as before services), a
// directory of its own under services/ for the others.
func (sc serviceConfig) dir(stateDir string) string {
	if sc.Name == state.DefaultService {
		return stateDir
	}
	return filepath.Join(stateDir, "services", sc.Name)
}

// service is one running service: its proxy Handler with its two
// upstreams, its switcher, its launcher. It implements registry.Service.
type service struct {
	cfg         serviceConfig
	h           *proxy.Handler
	rt          *router
	sw          *switcher.Switcher
	stopMonitor context.CancelFunc
	closeLaunch func()
}

func (s *service) Handler() *proxy.Handler { return s.h }

func (s *service) Hold(kind string) (release func(), err error) { return s.sw.Hold(kind) }

// Close stops the service's health monitor and its launcher's
// connections; its apps keep running and its requests in flight finish.
func (s *service) Close() {
	s.stopMonitor()
	s.closeLaunch()
}

// serviceEnv is what every service of one 'baton serve' shares.
type serviceEnv struct {
	ctx    context.Context // lives as long as baton serves
	edge   edgeConfig
	store  *state.Store
	obs    *observability
	logger *slog.Logger
}

// build starts a service: its Handler and upstreams, its switcher (which
// restores the service's state and routes to its live colour), its
// launcher and its health monitor.
func (e *serviceEnv) build(spec registry.Spec) (*service, error) {
	sc := spec.Settings.(serviceConfig)
	sc.Hosts, sc.PathPrefix, sc.StripPrefix = spec.Hosts, spec.PathPrefix, spec.StripPrefix
	sc.Launch.warnings = &warnList{}
	logger := e.logger
	if sc.Name != state.DefaultService {
		logger = logger.With("service", sc.Name)
	}
	ms := e.obs.metrics.Service(sc.Name)
	tally := newTallyObserver(e.obs.proxyObserver(ms)) // for the judge of a canary or watch: rollout.go
	traffic := newTrafficCounts(tally)
	h := proxy.NewHandler(proxy.Options{Logger: logger, RetryTimeout: sc.RetryTimeout, UpstreamTimeout: sc.UpstreamTimeout, MaxBodyBytes: int64(sc.MaxBodySize),
		TrustedProxies: e.edge.trusted, Observer: traffic,
		UnderscoresInHeaders: e.edge.Underscores, AllowTrace: e.edge.AllowTrace})
	rt, err := newRouter(h, sc.Blue, sc.Green)
	if err != nil {
		return nil, err
	}
	rt.traffic = traffic
	traffic.ups = rt.ups
	tally.ups = rt.ups
	track(ms, rt)
	sw, err := switcher.New(e.ctx, switcher.Config{
		Addrs:          [2]string{sc.Blue, sc.Green},
		HealthPasses:   sc.HealthPasses,
		HealthInterval: sc.HealthInterval,
		HealthDeadline: sc.HealthDeadline,
		DrainTimeout:   sc.DrainTimeout,
		StopTimeout:    sc.StopTimeout,
		NoStop:         sc.NoStop,
		Observer:       ms,
	}, rt, health.New(sc.HealthPath, sc.HealthTimeout), sc.Launch.stopper(), e.store.Service(sc.Name), logger)
	if err != nil {
		return nil, err
	}
	sw.SetTally(tally.tally)
	closeLaunch, err := sc.Launch.attach(sw, sc.dir(e.store.Dir()), logger)
	if err != nil {
		return nil, err
	}
	monitorCtx, stopMonitor := context.WithCancel(context.WithoutCancel(e.ctx))
	go sw.Monitor(monitorCtx)
	return &service{cfg: sc, h: h, rt: rt, sw: sw, stopMonitor: stopMonitor, closeLaunch: closeLaunch}, nil
}

// warnings returns what the checks at start found on every service, each
// named by its service but for the default one.
func warnings(reg *registry.Registry[*service]) []string {
	var out []string
	for _, e := range reg.List() {
		for _, w := range e.Service.cfg.Launch.warnings.Warnings() {
			if e.Spec.Name != state.DefaultService {
				w = "service " + e.Spec.Name + ": " + w
			}
			out = append(out, w)
		}
	}
	return out
}

// inFlight returns the requests in flight on every service.
func inFlight(reg *registry.Registry[*service]) int64 {
	var n int64
	for _, e := range reg.List() {
		n += e.Service.rt.InFlight(switcher.Blue) + e.Service.rt.InFlight(switcher.Green)
	}
	return n
}

// specs returns the registry's specs of scs.
func specs(scs []serviceConfig) []registry.Spec {
	out := make([]registry.Spec, len(scs))
	for i, sc := range scs {
		out[i] = sc.spec()
	}
	return out
}

// describeServices is the log line's summary of what runs: one
// "name (hosts, prefix)" a service.
func describeServices(reg *registry.Registry[*service]) string {
	var parts []string
	for _, e := range reg.List() {
		where := "every host"
		if len(e.Spec.Hosts) > 0 {
			where = strings.Join(e.Spec.Hosts, " ")
		}
		if e.Spec.PathPrefix != "" {
			where += " " + e.Spec.PathPrefix
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", e.Spec.Name, where))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// adminServices is the admin API's view of the registry.
type adminServices struct {
	reg      *registry.Registry[*service]
	stateDir string
}

func (a adminServices) List() []admin.Service {
	entries := a.reg.List()
	out := make([]admin.Service, len(entries))
	for i, e := range entries {
		out[i] = a.of(e)
	}
	return out
}

func (a adminServices) Lookup(name string) (admin.Service, bool) {
	e, ok := a.reg.Lookup(name)
	if !ok {
		return admin.Service{}, false
	}
	return a.of(e), true
}

func (a adminServices) of(e registry.Entry[*service]) admin.Service {
	sc := e.Service.cfg
	return admin.Service{Name: e.Spec.Name, Routing: admin.Routing{Hosts: e.Spec.Hosts, PathPrefix: e.Spec.PathPrefix},
		Controller: e.Service.sw, Deploy: sc.Launch.adminConfig(sc.dir(a.stateDir))}
}

// configReloader reads the config file again, with the command line baton was
// started with over it, and applies its services (admin.Reloader). The
// top-level settings (listen addresses, TLS, admin, state) take effect at
// the next start or 'baton upgrade'; a reload says which of them changed.
type configReloader struct {
	args    []string
	started map[string]string // topLevel at start
	reg     *registry.Registry[*service]
	store   *state.Store
	removed *removedServices
	metrics *metrics.Metrics // a removed service stops being exported
	edge    edgeConfig       // as started: the top level's TLS changes at the next start
	certs   *edge.Certs      // nil without TLS
	mu      sync.Mutex       // one reload at a time
}

func (r *configReloader) Reload(ctx context.Context) (admin.ReloadReport, error) {
	if !r.mu.TryLock() {
		return admin.ReloadReport{}, fmt.Errorf("another reload is running: %w", switcher.ErrBusy)
	}
	defer r.mu.Unlock()
	var cfg serveConfig
	fs := newServeFlags(&cfg)
	if err := fs.Parse(r.args); err != nil {
		return admin.ReloadReport{}, err // parsed at start: not reached
	}
	file, err := loadConfigFile(fs, &cfg)
	if err != nil {
		return admin.ReloadReport{}, err
	}
	if err := cfg.validate(); err != nil {
		return admin.ReloadReport{}, err
	}
	now := topLevel(fs)
	scs, err := serviceConfigs(r.args, &cfg, file)
	if err != nil {
		return admin.ReloadReport{}, err
	}
	certs, err := r.prepareCerts(scs)
	if err != nil {
		return admin.ReloadReport{}, err
	}
	before := map[string]*service{}
	for _, e := range r.reg.List() {
		before[e.Spec.Name] = e.Service
	}
	rep, err := r.reg.Apply(specs(scs))
	if err != nil {
		return admin.ReloadReport{}, err
	}
	if certs != nil {
		// Prepare checked the names: Commit does not fail on them.
		if err := certs.Commit(); err != nil {
			return admin.ReloadReport{}, fmt.Errorf("tls: services reloaded, certificates not: %w", err)
		}
	}
	for _, name := range rep.Added {
		r.removed.forget(name) // back in the config: its new switcher owns its instances
	}
	for _, name := range rep.Removed {
		r.removed.add(name, before[name])
		r.metrics.RemoveService(name)
	}
	out := admin.ReloadReport{File: cfg.ConfigFile, Added: rep.Added, Changed: rep.Changed, Unchanged: rep.Unchanged,
		Rerouted: rep.Rerouted, NeedRestart: topLevelChanges(r.started, now)}
	for _, name := range rep.Removed {
		rm := admin.RemovedService{Name: name}
		if st, err := r.store.Service(name).Load(); err == nil {
			for _, c := range switcher.Colors {
				if inst, ok := st.Instances[c.String()]; ok {
					rm.Instances = append(rm.Instances, admin.LeftInstance{Color: c.String(), Instance: inst})
				}
			}
		}
		out.Removed = append(out.Removed, rm)
	}
	return out, nil
}

// prepareCerts loads and checks the certificates the reloaded services
// need (certsConfig), changing nothing that is served; nil without TLS.
func (r *configReloader) prepareCerts(scs []serviceConfig) (*edge.CertsUpdate, error) {
	if r.certs == nil {
		for _, sc := range scs {
			if sc.TLSCert != "" {
				return nil, fmt.Errorf("%s: tls_cert: this baton serves no HTTPS (it was started without TLS); restart it, or run 'baton upgrade', to serve HTTPS", sc.where)
			}
		}
		return nil, nil
	}
	u, err := r.certs.Prepare(certsConfig(r.edge, scs))
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return u, nil
}

// removedServices keeps the services a reload removed, with the switcher
// that knows their app instances, until 'baton service stop' stops them
// (admin.ServiceStopper). At start, rememberRemoved adds those the state
// file has instances of and the config file does not name.
type removedServices struct {
	mu sync.Mutex
	m  map[string]*service
}

func (r *removedServices) add(name string, s *service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]*service{}
	}
	r.m[name] = s
}

// rememberRemoved finds, at start, the services the state file has app
// instances of but the config file no longer names (a reload removed them
// before this baton started, or the file was edited while baton was
// down), so that 'baton service stop' can stop those instances as it
// stops those of a service removed by a reload. Each is built as a service
// with the top level's settings and the addresses its instances were
// recorded at, then closed at once: it is never routed, deploys nothing,
// and is not exported in the metrics; only its switcher, which adopts the
// instances from the state, is kept. Instances started over SSH need the
// top level's ssh settings to be stopped: without them the service is
// left out with a warning naming the instances.
func rememberRemoved(env *serviceEnv, top serviceConfig, configured []serviceConfig, removed *removedServices) {
	all, err := env.store.LoadAll()
	if err != nil {
		return // start-up reported it already, naming the service
	}
	names := map[string]bool{}
	for _, sc := range configured {
		names[sc.Name] = true
	}
	for name, st := range all {
		if names[name] || len(st.Instances) == 0 {
			continue
		}
		sc := top
		sc.Name = name
		sc.Launch.warnings = nil
		remote := false
		for _, c := range switcher.Colors {
			if inst, ok := st.Instances[c.String()]; ok {
				if c == switcher.Blue {
					sc.Blue = inst.Addr
				} else {
					sc.Green = inst.Addr
				}
				remote = remote || inst.Launcher == "ssh"
			}
		}
		if remote && sc.Launch.SSH == "" || sc.Blue == sc.Green {
			env.logger.Warn("a service the config file no longer names left app instances that baton cannot stop from here: stop them by PID", "service", name, "instances", st.Instances)
			continue
		}
		if sc.Launch.Run == "" {
			// Only to adopt the recorded instances; nothing is launched.
			sc.Launch.Run = "{artifact}"
		}
		s, err := env.build(sc.spec())
		if err != nil {
			env.logger.Warn("could not take over the app instances of a service the config file no longer names: stop them by PID", "service", name, "err", err)
			continue
		}
		s.Close()
		env.obs.metrics.RemoveService(name)
		removed.add(name, s)
		env.logger.Info("a service the config file no longer names left app instances running; 'baton service stop "+name+"' stops them", "service", name)
	}
}

func (r *removedServices) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, name)
}

func (r *removedServices) StopService(ctx context.Context, name string, emit func(switcher.Event)) (int, error) {
	r.mu.Lock()
	s, ok := r.m[name]
	r.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("%w: %s", admin.ErrNotRemoved, name)
	}
	n, err := s.sw.StopInstances(ctx, emit)
	if err == nil {
		r.mu.Lock()
		if r.m[name] == s {
			delete(r.m, name)
		}
		r.mu.Unlock()
	}
	return n, err
}

func (r *removedServices) Removed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.m))
}

// topLevel returns the values of the top-level settings in fs (those
// that are not a service's own), by flag name.
func topLevel(fs *pflag.FlagSet) map[string]string {
	own := perServiceFlags()
	vals := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		if !own[f.Name] && f.Name != "config" {
			vals[f.Name] = f.Value.String()
		}
	})
	return vals
}

// topLevelChanges names, as file keys, the settings whose value differs
// between a and b.
func topLevelChanges(a, b map[string]string) []string {
	var changed []string
	for name, v := range a {
		if b[name] != v {
			changed = append(changed, strings.ReplaceAll(name, "-", "_"))
		}
	}
	sort.Strings(changed)
	return changed
}
