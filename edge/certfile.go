package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCertPollInterval is how often CertFile.Watch looks at the files.
const DefaultCertPollInterval = 5 * time.Second

// CertFile serves a certificate and key the operator brings, as PEM files,
// and picks up new versions of them without a restart: Watch polls the
// files' modification times, and a new pair that loads and matches replaces
// the old one atomically. Handshakes in progress and connections already
// established keep the certificate they started with; the next handshake
// gets the new one. A pair that fails to load (for instance the certificate
// was written but the key not yet) is logged and the old one stays in use.
//
// A CertFile is safe for concurrent use. Create it with NewCertFile.
type CertFile struct {
	certPath, keyPath string
	logger            *slog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // serialises Reload
	loaded  [2]os.FileInfo
	lastErr string
}

// NewCertFile loads the pair at certPath and keyPath. It fails if they do not
// load, so that a typo stops start-up instead of serving no certificate.
// logger may be nil.
func NewCertFile(certPath, keyPath string, logger *slog.Logger) (*CertFile, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &CertFile{certPath: certPath, keyPath: keyPath, logger: logger}
	if _, err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate returns the current certificate whatever the client asked
// for, like a server with a single default certificate. It is meant for
// tls.Config.GetCertificate.
func (c *CertFile) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// Leaf returns the parsed leaf of the current certificate.
func (c *CertFile) Leaf() *x509.Certificate { return c.cert.Load().Leaf }

// TLSConfig returns a tls.Config for the public HTTPS port that serves the
// current certificate and offers HTTP/2 and HTTP/1.1.
func (c *CertFile) TLSConfig() *tls.Config { return newTLSConfig(c.GetCertificate) }

// Reload loads the pair again if either file changed since the last
// successful load, and reports whether the certificate was replaced. An error
// leaves the current certificate in place.
func (c *CertFile) Reload() (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var now [2]os.FileInfo
	for i, p := range []string{c.certPath, c.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return false, fmt.Errorf("tls certificate: %w", err)
		}
		now[i] = fi
	}
	if c.cert.Load() != nil && sameFile(c.loaded[0], now[0]) && sameFile(c.loaded[1], now[1]) {
		return false, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certPath, c.keyPath)
	if err != nil {
		return false, fmt.Errorf("tls certificate %s with key %s: %w", c.certPath, c.keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false, fmt.Errorf("tls certificate %s: %w", c.certPath, err)
		}
	}
	c.cert.Store(&cert)
	c.loaded = now
	c.lastErr = ""
	if time.Now().After(cert.Leaf.NotAfter) {
		c.logger.Warn("tls certificate has expired", "cert", c.certPath, "not_after", cert.Leaf.NotAfter)
	}
	return true, nil
}

// sameFile reports whether a and b describe the same file in the same state:
// same inode (a renamed-over or re-linked file is a new one), size and
// modification time.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Watch calls Reload every interval (DefaultCertPollInterval if zero or
// negative) until ctx is done, logging replacements and failures. A failure
// is logged once until the files change again or a load succeeds.
func (c *CertFile) Watch(ctx context.Context, interval time.Duration) {
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
		c.poll()
	}
}

// poll calls Reload and logs what happened: a replacement, or a failure
// (once until the files change again or a load succeeds). It reports
// whether the certificate was replaced.
func (c *CertFile) poll() bool {
	changed, err := c.Reload()
	switch {
	case err != nil:
		c.mu.Lock()
		repeat := c.lastErr == err.Error()
		c.lastErr = err.Error()
		c.mu.Unlock()
		if !repeat {
			c.logger.Warn("tls certificate reload failed; keeping the current one", "err", err)
		}
	case changed:
		leaf := c.Leaf()
		c.logger.Info("tls certificate reloaded", "cert", c.certPath, "names", leaf.DNSNames,
			"not_after", leaf.NotAfter, "serial", leaf.SerialNumber.String())
	}
	return changed
}
