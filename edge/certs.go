package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mholt/acmez/v3"

	"github.com/batonproxy/baton/proxy"
)

// CertPair is a certificate file (PEM, leaf first, then intermediates) and
// its key file.
type CertPair struct {
	Cert, Key string
	// Hosts, if any, are names the certificate must cover (a service's
	// hosts: "*.example.com" needs a wildcard certificate of that name).
	// Prepare refuses a certificate that misses one.
	Hosts []string
	// Label says whose certificate it is in errors, e.g. "service shop".
	Label string
}

// CertsConfig says which certificates Certs serves.
type CertsConfig struct {
	// Files are the certificate files, each chosen by the names it holds.
	// When two hold the same name, the earlier one is served for it.
	Files []CertPair
	// Default, if its Cert is set, is served to a client whose SNI names
	// no certificate, or that sends none (by IP address); its names are
	// chosen by as a file's are, after Files. Without it the default is
	// the first ACME domain's certificate, else the first file's.
	Default CertPair
	// ACMEDomains are the names whose certificates come from ACME (Certs
	// needs an ACME then); see ACME.SetDomains. An SNI name that is one
	// of them gets its ACME certificate before any file is looked at.
	ACMEDomains []string
}

// Certs picks the certificate of each TLS handshake by the name the client
// asked for (SNI): an ACME domain's certificate, else a certificate file
// holding the name exactly, else one holding a wildcard of it, else the
// default. It also is the proxy's Authority: a request on a TLS
// connection is for a host the certificate chosen for that connection's
// SNI name covers, or it gets 421. Both decisions go through one choice
// (certTable.pick), so they cannot disagree.
//
// The certificate files are watched (Watch) as CertFile does, and a file
// whose names change is chosen by its new names from the next handshake
// on. A reload of the configuration goes in two steps, Prepare (load and
// check, change nothing) and Commit, so that it can be abandoned when
// something else in the same reload fails.
//
// Certs is safe for concurrent use. Create it with NewCerts.
type Certs struct {
	acme   *ACME // nil without ACME
	logger *slog.Logger
	table  atomic.Pointer[certTable]

	mu    sync.Mutex // serialises Commit and Watch's rebuilds
	conf  CertsConfig
	files map[[2]string]*CertFile // by cert and key path
}

// certTable is an immutable snapshot of the choice by name.
type certTable struct {
	byName proxy.HostMap[*certSource]
	def    *certSource // nil: no certificate for unknown names
}

// certSource is one certificate to serve and the hosts it covers.
type certSource struct {
	file     *CertFile // nil for an ACME domain
	acmeName string
	covers   proxy.HostMap[struct{}]
}

// NewCerts returns a Certs that serves nothing until Commit. acme, if not
// nil, serves the ACME domains and answers TLS-ALPN-01 challenges.
// logger may be nil.
func NewCerts(acme *ACME, logger *slog.Logger) *Certs {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Certs{acme: acme, logger: logger, files: map[[2]string]*CertFile{}}
	c.table.Store(&certTable{})
	return c
}

// CertsUpdate is a configuration that Prepare loaded and checked.
type CertsUpdate struct {
	c     *Certs
	conf  CertsConfig
	files map[[2]string]*CertFile
}

// Prepare loads the files of conf (those already served are read again
// if they changed) and checks them and the ACME domains, reporting every
// problem; it changes nothing that is served. Commit the result to serve
// it.
func (c *Certs) Prepare(conf CertsConfig) (*CertsUpdate, error) {
	var errs []error
	if len(conf.ACMEDomains) > 0 {
		if c.acme == nil {
			errs = append(errs, errors.New("acme domains given, but baton runs without ACME"))
		} else if _, err := normalizeDomains(conf.ACMEDomains); err != nil {
			errs = append(errs, err)
		}
	}
	c.mu.Lock()
	current := c.files
	c.mu.Unlock()
	files := map[[2]string]*CertFile{}
	pairs := conf.Files
	if conf.Default.Cert != "" {
		pairs = append(pairs[:len(pairs):len(pairs)], conf.Default)
	}
	for _, p := range pairs {
		key := [2]string{p.Cert, p.Key}
		f, ok := files[key]
		if !ok {
			var err error
			f, ok = current[key]
			if ok {
				_, err = f.Reload()
			} else {
				f, err = NewCertFile(p.Cert, p.Key, c.logger)
			}
			if err != nil {
				errs = append(errs, labelled(p.Label, err))
				continue
			}
			files[key] = f
		}
		covers := coveredBy(f.Leaf())
		for _, h := range p.Hosts {
			if !covers.Contains(h) {
				errs = append(errs, labelled(p.Label, fmt.Errorf("certificate %s does not cover host %s (it names %s)",
					p.Cert, h, strings.Join(certNames(f.Leaf()), ", "))))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &CertsUpdate{c: c, conf: conf, files: files}, nil
}

func labelled(label string, err error) error {
	if label == "" {
		return err
	}
	return fmt.Errorf("%s: %w", label, err)
}

// Commit serves the prepared configuration from the next handshake on,
// and makes the ACME domains the managed ones. Connections already open
// keep the certificate they got.
func (u *CertsUpdate) Commit() error {
	c := u.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conf, c.files = u.conf, u.files
	c.rebuild()
	if c.acme != nil {
		return c.acme.SetDomains(u.conf.ACMEDomains)
	}
	return nil
}

// rebuild makes a new table from c.conf and the files as loaded now.
// c.mu is held.
func (c *Certs) rebuild() {
	t := &certTable{}
	var firstACME, firstFile *certSource
	for _, name := range c.conf.ACMEDomains {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
		src := &certSource{acmeName: name}
		src.covers.Add(name, struct{}{}) // certmagic gets one certificate per name
		if t.byName.Add(name, src) && firstACME == nil {
			firstACME = src
		}
	}
	sources := map[*CertFile]*certSource{}
	add := func(p CertPair) *certSource {
		f := c.files[[2]string{p.Cert, p.Key}]
		if src, ok := sources[f]; ok {
			return src
		}
		src := &certSource{file: f, covers: coveredBy(f.Leaf())}
		sources[f] = src
		for _, name := range certNames(f.Leaf()) {
			t.byName.Add(name, src)
		}
		return src
	}
	for _, p := range c.conf.Files {
		if src := add(p); firstFile == nil {
			firstFile = src
		}
	}
	switch {
	case c.conf.Default.Cert != "":
		t.def = add(c.conf.Default)
	case firstACME != nil:
		t.def = firstACME
	default:
		t.def = firstFile
	}
	c.table.Store(t)
}

// pick returns the certificate for a client that asked for serverName
// ("" when it sent no SNI), or nil if there is none.
func (t *certTable) pick(serverName string) *certSource {
	if serverName != "" {
		if src, ok := t.byName.Lookup(serverName); ok {
			return src
		}
	}
	return t.def
}

// GetCertificate serves the certificate pick chooses, or answers an ACME
// TLS-ALPN-01 challenge. It is meant for tls.Config.GetCertificate.
func (c *Certs) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	// RFC 8737 section 3: a validation offers "acme-tls/1" alone, with the
	// name being validated as its SNI.
	if c.acme != nil && hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return c.acme.getCertificate(hello)
	}
	src := c.table.Load().pick(hello.ServerName)
	switch {
	case src == nil:
		return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
	case src.file != nil:
		return src.file.cert.Load(), nil
	}
	if !strings.EqualFold(strings.TrimSuffix(hello.ServerName, "."), src.acmeName) {
		// The default, for another name or none: ask certmagic for the
		// name chosen.
		h := *hello
		h.ServerName = src.acmeName
		hello = &h
	}
	return c.acme.getCertificate(hello)
}

// Covers implements proxy.Authority: whether the certificate chosen for
// serverName covers host.
func (c *Certs) Covers(serverName, host string) bool {
	src := c.table.Load().pick(serverName)
	return src != nil && src.covers.Contains(host)
}

// TLSConfig returns a tls.Config for the public HTTPS port that serves
// GetCertificate's choice and offers HTTP/2 and HTTP/1.1 (and ACME's
// "acme-tls/1" with ACME).
func (c *Certs) TLSConfig() *tls.Config {
	if c.acme != nil {
		return newTLSConfig(c.GetCertificate, acmez.ACMETLS1Protocol)
	}
	return newTLSConfig(c.GetCertificate)
}

// Watch checks every file served every interval (DefaultCertPollInterval
// if zero or negative) until ctx is done, as CertFile.Watch does, and
// chooses afresh by the names of those that changed.
func (c *Certs) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultCertPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		changed := false
		for _, f := range c.files {
			changed = f.poll() || changed
		}
		if changed {
			c.rebuild()
		}
		c.mu.Unlock()
	}
}

// certNames returns the names a certificate holds: its DNS names and its
// IP addresses as a Host header writes them. The common name is not one:
// clients have ignored it since subject alternative names came (Go since
// 1.15, browsers for longer).
func certNames(leaf *x509.Certificate) []string {
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		if ip.To4() == nil {
			names = append(names, "["+ip.String()+"]")
		} else {
			names = append(names, ip.String())
		}
	}
	return names
}

// coveredBy returns the hosts a certificate covers, matched as routes
// match hosts (a wildcard covers one label).
func coveredBy(leaf *x509.Certificate) proxy.HostMap[struct{}] {
	var m proxy.HostMap[struct{}]
	for _, name := range certNames(leaf) {
		m.Add(name, struct{}{})
	}
	return m
}

var _ proxy.Authority = (*Certs)(nil)
