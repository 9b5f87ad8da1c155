package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/edge"
	"github.com/batonproxy/baton/graceful"
	"github.com/batonproxy/baton/proxy"
)

// edgeConfig holds the flags of the public edge: TLS, protocol limits and
// whom to believe about the client's address.
type edgeConfig struct {
	HTTPSAddr         string
	Domains           []string
	ACME              bool // --acme: certificates for every host of every service
	ACMECA            string
	ACMECARoot        string
	ACMEEmail         string
	TLSCert, TLSKey   string
	HTTPOnly          bool
	TrustedProxies    []string
	MaxHeaderBytes    sizeFlag
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	FastPath          bool
	Underscores       bool // --underscores-in-headers
	AllowTrace        bool

	trusted      []netip.Prefix // TrustedProxies, parsed by validate
	serviceCerts bool           // some service of the config file has tls_cert (loadConfigFile)
	certPoll     time.Duration  // how often --tls-cert files are checked; 0 means edge.DefaultCertPollInterval
	onListen     func(*edge.Listeners)
}

func (c *edgeConfig) flags(fs *pflag.FlagSet) {
	c.MaxHeaderBytes = edge.DefaultMaxHeaderBytes
	fs.StringVar(&c.HTTPSAddr, "https", "", "public HTTPS listen `address` when TLS is on (default \":443\")")
	fs.StringSliceVar(&c.Domains, "domain", nil, "get a certificate for `name` from an ACME CA and serve HTTPS (repeatable)")
	fs.BoolVar(&c.ACME, "acme", false, "get certificates from the ACME CA for every host of every service that has no tls_cert (config file; wildcards need tls_cert)")
	fs.StringVar(&c.ACMECA, "acme-ca", edge.LetsEncryptCA, "ACME directory `URL` (Let's Encrypt staging: "+edge.LetsEncryptStagingCA+")")
	fs.StringVar(&c.ACMECARoot, "acme-ca-root", "", "PEM `file` of extra roots to trust for the ACME CA's API (a private CA)")
	fs.StringVar(&c.ACMEEmail, "acme-email", "", "contact `email` for the ACME account (expiry notices)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this PEM certificate `file` (chain included); reloaded when it changes")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.BoolVar(&c.HTTPOnly, "http-only", false, "serve plain HTTP only, e.g. behind a load balancer that terminates TLS")
	fs.StringSliceVar(&c.TrustedProxies, "trusted-proxies", nil, "`CIDR`s of proxies whose X-Forwarded-For/-Proto/-Host are believed (comma-separated or repeated)")
	fs.Var(&c.MaxHeaderBytes, "max-header-bytes", "refuse request headers larger than this `size` with 431")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", edge.DefaultReadHeaderTimeout, "time a client has to send request headers (and finish TLS); stops slowloris")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", edge.DefaultIdleTimeout, "how long an idle keep-alive client connection is kept")
	fs.BoolVar(&c.Underscores, "underscores-in-headers", false, "pass request headers whose name has an _ to the app (false: drop them, as nginx does; WSGI/CGI apps read X_Real_IP as X-Real-IP)")
	fs.BoolVar(&c.AllowTrace, "allow-trace", false, "pass TRACE requests to the app (false: answer them 405)")
	fs.BoolVar(&c.FastPath, "fast-path", true, "serve HTTP/1.1 requests (plain and HTTPS) with baton's own loop, net/http taking only the unusual ones and HTTP/2 (false: net/http for all)")
}

// tlsOn reports whether baton serves HTTPS: some certificate, from ACME
// or from files, is configured.
func (c *edgeConfig) tlsOn() bool {
	return c.usesACME() || c.TLSCert != "" || c.TLSKey != "" || c.serviceCerts
}

// usesACME reports whether certificates come from an ACME CA.
func (c *edgeConfig) usesACME() bool { return len(c.Domains) > 0 || c.ACME }

// httpsAddr is the HTTPS listen address, or "" when TLS is off.
func (c *edgeConfig) httpsAddr() string {
	switch {
	case !c.tlsOn():
		return ""
	case c.HTTPSAddr == "":
		return ":443"
	}
	return c.HTTPSAddr
}

// validate checks the edge flags and reports every problem; it also parses
// --trusted-proxies.
func (c *edgeConfig) validate(httpAddr string) error {
	var errs []error
	switch {
	case c.HTTPOnly && c.tlsOn():
		errs = append(errs, errors.New("--http-only cannot be combined with --domain, --acme, --tls-cert or a service's tls_cert"))
	case (c.TLSCert == "") != (c.TLSKey == ""):
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.HTTPSAddr != "" && !c.tlsOn() {
		errs = append(errs, errors.New("--https needs --domain, --acme or --tls-cert"))
	}
	if a := c.httpsAddr(); a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("--https %q: want host:port", a))
		} else if a == httpAddr && !strings.HasSuffix(a, ":0") {
			errs = append(errs, fmt.Errorf("--https and --http are both %s", a))
		}
	}
	if !c.usesACME() {
		for name, set := range map[string]bool{"--acme-email": c.ACMEEmail != "", "--acme-ca-root": c.ACMECARoot != "",
			"--acme-ca": c.ACMECA != edge.LetsEncryptCA} {
			if set {
				errs = append(errs, fmt.Errorf("%s needs --domain or --acme", name))
			}
		}
	} else if u, err := url.Parse(c.ACMECA); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("--acme-ca %q: want an https:// ACME directory URL", c.ACMECA))
	}
	trusted, err := edge.ParsePrefixes(c.TrustedProxies)
	if err != nil {
		errs = append(errs, fmt.Errorf("--trusted-proxies: %w", err))
	}
	c.trusted = trusted
	if c.MaxHeaderBytes <= 0 || c.MaxHeaderBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("--max-header-bytes %d: want between 1 and 1g", c.MaxHeaderBytes))
	}
	for name, d := range map[string]time.Duration{"--read-header-timeout": c.ReadHeaderTimeout, "--idle-timeout": c.IdleTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", name, d))
		}
	}
	return errors.Join(errs...)
}

// publicEdge is the public side of 'baton serve': its listeners (the admin
// one included, so that all sockets are opened in one place), the public
// servers and the certificate source.
type publicEdge struct {
	lns       *edge.Listeners
	servers   []publicServer
	acme      *edge.ACME  // nil unless certificates come from ACME
	certs     *edge.Certs // nil without TLS
	certFiles bool        // some certificate comes from files
	certPoll  time.Duration
	ctx       context.Context // lives until close
	cancel    context.CancelFunc
}

type publicServer struct {
	name string
	srv  *http.Server
	fast *proxy.FastServer // if set, serves ln and hands srv what it does not serve itself
	ln   net.Listener
	tls  bool
}

// startEdge opens every listener of 'baton serve' and builds the public
// servers around rt (the proxy). Nothing is served until run.
// listen, if not nil, opens (or takes over) each socket; see edge.ListenConfig.
// certs says which certificate serves which name (certsConfig).
func startEdge(cfg serveConfig, certs edge.CertsConfig, rt *proxy.Router, logger *slog.Logger, listen func(name, addr string) (net.Listener, error)) (*publicEdge, error) {
	ec := cfg.Edge
	lns, err := edge.Listen(edge.ListenConfig{HTTP: cfg.HTTPAddr, HTTPS: ec.httpsAddr(), Admin: cfg.AdminAddr, Listen: listen})
	if err != nil {
		return nil, err
	}
	if ec.onListen != nil {
		ec.onListen(lns)
	}
	p := &publicEdge{lns: lns, certPoll: ec.certPoll}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	lim := edge.Limits{ReadHeaderTimeout: ec.ReadHeaderTimeout, IdleTimeout: ec.IdleTimeout, MaxHeaderBytes: int(ec.MaxHeaderBytes)}
	app := edge.Guard(rt)

	var tlsConfig *tls.Config
	httpHandler := app
	switch {
	case ec.tlsOn():
		if err := p.startCerts(cfg, certs, logger); err != nil {
			p.close()
			return nil, err
		}
		tlsConfig = p.certs.TLSConfig()
		// Over TLS, a Host the connection's certificate does not cover
		// gets 421 (proxy.Authority).
		rt.SetAuthority(p.certs)
		httpHandler = edge.Redirect(listenPort(lns.HTTPS), app)
		if p.acme != nil {
			httpHandler = p.acme.HTTPHandler(httpHandler)
		}
	case !ec.HTTPOnly:
		logger.Info("serving plain HTTP only; use --domain, --acme or --tls-cert for HTTPS, or --http-only to say this is intended")
	}
	plain := publicServer{name: "public HTTP", srv: edge.NewServer(httpHandler, nil, lim, logger), ln: lns.HTTP}
	if ec.FastPath && tlsConfig == nil {
		// Plain HTTP serves the app (with TLS on it only redirects and
		// answers ACME challenges): baton's own loop takes the common
		// requests, net/http the rest. See proxy.FastServer.
		plain.fast = &proxy.FastServer{Router: rt, Fallback: plain.srv}
	}
	p.servers = append(p.servers, plain)
	if tlsConfig != nil {
		secure := publicServer{name: "public HTTPS", srv: edge.NewServer(app, tlsConfig, lim, logger), ln: lns.HTTPS, tls: true}
		if ec.FastPath {
			// HTTPS/1.1 connections on the fast path too, after the
			// handshake; HTTP/2 and ACME's TLS-ALPN challenges go to
			// net/http.
			secure.fast = &proxy.FastServer{Router: rt, Fallback: secure.srv, TLS: true}
		}
		p.servers = append(p.servers, secure)
	}
	return p, nil
}

// startCerts builds the certificate source of the HTTPS listener: an ACME
// manager when some name's certificate comes from ACME (it starts
// obtaining them in run), and the choice by SNI name among it and the
// certificate files.
func (p *publicEdge) startCerts(cfg serveConfig, certs edge.CertsConfig, logger *slog.Logger) error {
	ec := cfg.Edge
	if ec.usesACME() {
		roots, err := loadRoots(ec.ACMECARoot)
		if err != nil {
			return err
		}
		p.acme, err = edge.NewACME(edge.ACMEConfig{
			Domains:      certs.ACMEDomains,
			CA:           ec.ACMECA,
			Email:        ec.ACMEEmail,
			StorageDir:   edge.StorageDir(cfg.StateDir),
			TrustedRoots: roots,
			HTTPAddr:     p.lns.HTTP.Addr().String(),
			HTTPSAddr:    p.lns.HTTPS.Addr().String(),
			Logger:       logger,
		})
		if err != nil {
			return err
		}
	}
	p.certs = edge.NewCerts(p.acme, logger)
	u, err := p.certs.Prepare(certs)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := u.Commit(); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	p.certFiles = len(certs.Files) > 0 || certs.Default.Cert != ""
	if !p.certFiles && len(certs.ACMEDomains) == 0 {
		logger.Warn("HTTPS is on but no name has a certificate: give services hosts (with --acme) or tls_cert, or use --domain or --tls-cert")
	}
	return nil
}

// certsConfig says which certificate serves which name: a service's own
// files (tls_cert, tls_key) for its hosts; from ACME the --domain names
// and, with --acme, every host of every service without files of its own;
// --tls-cert for any other name, and for clients that send none.
func certsConfig(ec edgeConfig, scs []serviceConfig) edge.CertsConfig {
	var c edge.CertsConfig
	if ec.TLSCert != "" {
		c.Default = edge.CertPair{Cert: ec.TLSCert, Key: ec.TLSKey, Label: "--tls-cert"}
	}
	c.ACMEDomains = append(c.ACMEDomains, ec.Domains...)
	for _, sc := range scs {
		switch {
		case sc.TLSCert != "":
			c.Files = append(c.Files, edge.CertPair{Cert: sc.TLSCert, Key: sc.TLSKey, Hosts: sc.Hosts, Label: sc.where})
		case ec.ACME:
			c.ACMEDomains = append(c.ACMEDomains, sc.Hosts...)
		}
	}
	return c
}

// run serves the public servers and starts certificate management, then
// returns the first error from either, or nil once every server was shut
// down.
func (p *publicEdge) run() error {
	errc := make(chan error, len(p.servers)+1)
	for _, s := range p.servers {
		go func() {
			var err error
			switch {
			case s.fast != nil:
				err = s.fast.Serve(s.ln)
			case s.tls:
				err = s.srv.ServeTLS(s.ln, "", "")
			default:
				// Screened as the fast path screens what it hands over:
				// HTTP/1.0 with Transfer-Encoding gets 400 (proxy/screen.go).
				err = s.srv.Serve(proxy.ScreenListener(s.ln, s.srv.MaxHeaderBytes))
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				err = fmt.Errorf("%s server: %w", s.name, err)
			} else {
				err = nil
			}
			errc <- err
		}()
	}
	if p.acme != nil {
		// After Serve has started: the CA's validation requests arrive on
		// these listeners.
		if err := p.acme.Manage(p.ctx); err != nil {
			return fmt.Errorf("acme: %w", err)
		}
	}
	if p.certs != nil {
		go p.certs.Watch(p.ctx, p.certPoll)
	}
	for range p.servers {
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// attachDrainer makes d track the public servers' connections, the fast
// path's included, and answer with "Connection: close" while it drains.
func (p *publicEdge) attachDrainer(d *graceful.Drainer) {
	for _, s := range p.servers {
		d.Attach(s.srv)
		if s.fast != nil {
			s.fast.Draining = d.Draining
		}
	}
}

// closeFast closes the connections the fast path still serves: after a
// drain, those that outlived its deadline.
func (p *publicEdge) closeFast() {
	for _, s := range p.servers {
		if s.fast != nil {
			s.fast.Close()
		}
	}
}

// httpServers returns the public servers, for shutdown.
func (p *publicEdge) httpServers() []*http.Server {
	out := make([]*http.Server, len(p.servers))
	for i, s := range p.servers {
		out[i] = s.srv
	}
	return out
}

// logAttrs describes the public side for the start-up log line.
func (p *publicEdge) logAttrs() []any {
	tlsMode := "off"
	switch {
	case p.acme != nil && p.certFiles:
		tlsMode = "acme+cert-files"
	case p.acme != nil:
		tlsMode = "acme"
	case p.certs != nil:
		tlsMode = "cert-file"
	}
	return []any{"http", edge.Addr(p.lns.HTTP), "https", edge.Addr(p.lns.HTTPS), "tls", tlsMode}
}

// close stops certificate management and closes the listeners; call it after
// the servers were shut down.
func (p *publicEdge) close() {
	p.cancel()
	if p.acme != nil {
		p.acme.Stop()
	}
	p.lns.Close()
}

func listenPort(ln net.Listener) string {
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// loadRoots returns the system roots plus those in file, or nil (the system
// roots) if file is empty.
func loadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	return readCertPool("--acme-ca-root", file, pool)
}

// sizeFlag is a byte size flag that takes suffixes: 512k, 10m, 1g (powers
// of 1024, as nginx reads them; "10M", "10MB" and "10MiB" are the same).
// Every size flag of baton is one, parsed by edge.ParseSize.
type sizeFlag int64

func (s *sizeFlag) String() string {
	if *s == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}} {
		if int64(*s)%u.n == 0 {
			return strconv.FormatInt(int64(*s)/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *sizeFlag) Set(v string) error {
	n, err := edge.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func (s *sizeFlag) Type() string { return "size" }
