package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
)

// LetsEncryptCA is the default ACME directory: Let's Encrypt's production
// CA. LetsEncryptStagingCA issues untrusted certificates under much higher
// rate limits, for trying a set-up out.
const (
	LetsEncryptCA        = certmagic.LetsEncryptProductionCA
	LetsEncryptStagingCA = certmagic.LetsEncryptStagingCA
)

// ACMEConfig configures automatic HTTPS.
type ACMEConfig struct {
	// Domains are the names to get certificates for (see CheckDomain).
	// It may be empty when the names come later, through SetDomains.
	Domains []string
	// CA is the ACME directory URL. Empty means LetsEncryptCA.
	CA string
	// Email is given to the CA for expiry and policy notices. Empty registers
	// an account without one.
	Email string
	// StorageDir holds the account key, certificates and keys. It should be
	// persistent: losing it means asking the CA again, which is rate-limited.
	StorageDir string
	// TrustedRoots are the roots trusted when talking to the CA's API (for a
	// private CA). Nil means the system's roots.
	TrustedRoots *x509.CertPool
	// HTTPAddr and HTTPSAddr are the addresses of baton's own listeners, on
	// which the CA's HTTP-01 and TLS-ALPN-01 validations arrive. certmagic
	// would otherwise try to open ports 80 and 443 itself. They are what
	// Listeners.HTTP.Addr() and Listeners.HTTPS.Addr() say.
	HTTPAddr, HTTPSAddr string
	// DisableHTTPChallenge and DisableTLSALPNChallenge turn one of the two
	// challenge types off, e.g. when port 80 is not reachable from the CA.
	DisableHTTPChallenge, DisableTLSALPNChallenge bool
	// Logger receives certmagic's log lines. Nil discards them.
	Logger *slog.Logger
}

// ACME obtains and renews certificates from an ACME CA with certmagic, and
// serves them. It has its own certmagic cache, config and issuer, never
// certmagic's package-level defaults, so nothing else in the process shares
// its state. Create it with NewACME, start it with Manage, stop it with Stop.
//
// ACME is safe for concurrent use.
type ACME struct {
	cache  *certmagic.Cache
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	logger *slog.Logger

	mu      sync.Mutex      // serialises Manage and SetDomains
	domains []string        // managed (or to manage, before Manage)
	ctx     context.Context // Manage's; nil until then
}

// CheckDomain reports why name cannot have a certificate from ACME, or
// returns nil: it must be a host name and not a
// wildcard, which needs a DNS challenge that baton does not do.
func CheckDomain(name string) error {
	switch {
	case strings.Contains(name, "*"):
		return fmt.Errorf("acme: domain %q: wildcards need a DNS challenge, which baton does not do", name)
	case !certmagic.SubjectQualifiesForCert(name):
		return fmt.Errorf("acme: domain %q is not a valid host name", name)
	}
	return nil
}

// normalizeDomains lower-cases and trims names and drops repeats, keeping
// the first of each in order, and reports every name CheckDomain refuses.
func normalizeDomains(names []string) ([]string, error) {
	var errs []error
	out := make([]string, 0, len(names))
	for _, d := range names {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if err := CheckDomain(d); err != nil {
			errs = append(errs, err)
			continue
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, errors.Join(errs...)
}

// NewACME validates c and builds the certificate manager. It does not talk
// to the CA yet.
func NewACME(c ACMEConfig) (*ACME, error) {
	var errs []error
	domains, err := normalizeDomains(c.Domains)
	if err != nil {
		errs = append(errs, err)
	}
	if c.StorageDir == "" {
		errs = append(errs, errors.New("acme: no storage directory"))
	}
	httpHost, httpPort, err := splitListenAddr(c.HTTPAddr)
	if err != nil && !c.DisableHTTPChallenge {
		errs = append(errs, fmt.Errorf("acme: HTTP listener address: %w", err))
	}
	tlsHost, tlsPort, err := splitListenAddr(c.HTTPSAddr)
	if err != nil && !c.DisableTLSALPNChallenge {
		errs = append(errs, fmt.Errorf("acme: HTTPS listener address: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	zl := newZapLogger(logger.With("component", "certmagic"))

	a := &ACME{domains: domains, logger: logger}
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		Logger:           zl,
	})
	var defaultName string
	if len(domains) > 0 {
		// Clients that send no SNI (by IP address) get the first domain's
		// certificate rather than a failed handshake. (Certs, which picks
		// among several sources, always asks for a name of its choosing.)
		defaultName = domains[0]
	}
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage:           &certmagic.FileStorage{Path: c.StorageDir},
		Logger:            zl,
		DefaultServerName: defaultName,
	})
	listenHost := tlsHost
	if c.DisableTLSALPNChallenge {
		listenHost = httpHost
	}
	a.issuer = certmagic.NewACMEIssuer(a.magic, certmagic.ACMEIssuer{
		CA:                      c.CA,
		Email:                   c.Email,
		Agreed:                  true, // asking for a certificate is agreeing to the CA's terms
		TrustedRoots:            c.TrustedRoots,
		DisableHTTPChallenge:    c.DisableHTTPChallenge,
		DisableTLSALPNChallenge: c.DisableTLSALPNChallenge,
		// With the host and ports of baton's own listeners, certmagic finds
		// them taken and relies on HTTPHandler and TLSConfig to answer.
		ListenHost:     listenHost,
		AltHTTPPort:    httpPort,
		AltTLSALPNPort: tlsPort,
		Logger:         zl,
	})
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// splitListenAddr returns the host (empty for a wildcard address) and port
// of a listener address.
func splitListenAddr(addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port <= 0 {
		return "", 0, fmt.Errorf("address %q: want a numeric port", addr)
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		h = ""
	}
	return h, port, nil
}

// StorageDir returns the certmagic storage directory under stateDir.
func StorageDir(stateDir string) string { return filepath.Join(stateDir, "certmagic") }

// Domains returns the managed names, lower-cased, in order.
func (a *ACME) Domains() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.domains)
}

// Manage starts obtaining (or loading from storage) and then renewing the
// certificates in the background; it returns at once. Errors are logged and
// retried by certmagic with back-off; the one returned here is only for
// names it refuses outright. Call it once the listeners are being served, so
// that the CA's validation requests find baton answering. ctx bounds the
// management of these names and of those SetDomains adds later.
func (a *ACME) Manage(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ctx = ctx
	return a.magic.ManageAsync(ctx, a.domains)
}

// SetDomains makes domains the managed names: a name not managed yet is
// obtained (or loaded from storage) in the background, as Manage does,
// and a name no longer in domains is no longer renewed (its certificate
// stays in storage, and is used again if the name comes back). Before
// Manage it only changes what Manage will manage. Nothing changes if a
// name is refused (CheckDomain).
func (a *ACME) SetDomains(domains []string) error {
	next, err := normalizeDomains(domains)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := a.domains
	a.domains = next
	if a.ctx == nil {
		return nil
	}
	var added []string
	var removed []certmagic.SubjectIssuer
	for _, d := range next {
		if !slices.Contains(prev, d) {
			added = append(added, d)
		}
	}
	for _, d := range prev {
		if !slices.Contains(next, d) {
			removed = append(removed, certmagic.SubjectIssuer{Subject: d})
		}
	}
	if len(removed) > 0 {
		a.cache.RemoveManaged(removed)
	}
	if len(added) > 0 {
		a.logger.Info("acme: managing new names", "names", added)
		return a.magic.ManageAsync(a.ctx, added)
	}
	return nil
}

// getCertificate serves the certificate of hello's name, or answers a
// TLS-ALPN-01 challenge.
func (a *ACME) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.magic.GetCertificate(hello)
}

// TLSConfig returns a tls.Config for the public HTTPS port: certificates
// from the cache (loaded from storage or obtained on start), HTTP/2 and
// HTTP/1.1, and the "acme-tls/1" protocol that answers TLS-ALPN-01
// challenges on the same port.
func (a *ACME) TLSConfig() *tls.Config {
	return newTLSConfig(a.magic.GetCertificate, acmez.ACMETLS1Protocol)
}

// HTTPHandler returns next wrapped so that the CA's HTTP-01 challenge
// requests for baton's own orders are answered; everything else goes to
// next. Put it in front of Redirect on the plain-HTTP port.
func (a *ACME) HTTPHandler(next http.Handler) http.Handler {
	return a.issuer.HTTPChallengeHandler(next)
}

// Stop stops background renewals. In-flight ACME requests are abandoned.
func (a *ACME) Stop() { a.cache.Stop() }
