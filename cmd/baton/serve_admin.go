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
	"os"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/edge"
)

// adminTLSConfig holds the serve flags that put the admin API behind TLS,
// so that a CI job on another host does not send the token in clear.
type adminTLSConfig struct {
	Cert, Key string
}

func (c *adminTLSConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Cert, "admin-tls-cert", "", "serve the admin API over HTTPS with this PEM certificate `file` (chain included); reloaded when it changes")
	fs.StringVar(&c.Key, "admin-tls-key", "", "PEM private key `file` for --admin-tls-cert")
}

func (c *adminTLSConfig) validate() error {
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("--admin-tls-cert and --admin-tls-key go together: give both, or neither for plain HTTP")
	}
	return nil
}

// serveAdmin serves srv on ln until it is shut down: over TLS with the
// --admin-tls-cert pair (picked up again when the files change, like
// --tls-cert), else plain HTTP. The pair is loaded before it returns a
// serve function, so that a bad file stops start-up.
func (c *adminTLSConfig) serveAdmin(ctx context.Context, srv *http.Server, logger *slog.Logger) (func(ln net.Listener) error, error) {
	if c.Cert == "" {
		return func(ln net.Listener) error { return serveOn(srv, ln, "admin") }, nil
	}
	cf, err := edge.NewCertFile(c.Cert, c.Key, logger)
	if err != nil {
		return nil, fmt.Errorf("--admin-tls-cert: %w", err)
	}
	go cf.Watch(ctx, edge.DefaultCertPollInterval)
	// HTTP/1.1 only: the CLI and curl speak it, and an NDJSON stream gains
	// nothing from HTTP/2.
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: cf.GetCertificate, NextProtos: []string{"http/1.1"}}
	return func(ln net.Listener) error {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin server: %w", err)
		}
		return nil
	}, nil
}

// readCertPool adds the PEM certificates in file to base (a new, empty
// pool if base is nil) and returns it; flag names the flag in errors. It is
// the one reader of --admin-ca, --cacert and --acme-ca-root.
func readCertPool(flag, file string, base *x509.CertPool) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if base == nil {
		base = x509.NewCertPool()
	}
	if !base.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", flag, file)
	}
	return base, nil
}
