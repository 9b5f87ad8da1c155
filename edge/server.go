package edge

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Defaults for Limits.
const (
	// DefaultReadHeaderTimeout bounds how long a client may take to send a
	// request's headers (and, on HTTPS, to finish the TLS handshake). It is
	// what stops slowloris clients that trickle header bytes to hold a
	// connection open forever.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout bounds how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes bounds the size of a request's headers; larger
	// requests get 431 Request Header Fields Too Large.
	DefaultMaxHeaderBytes = 64 << 10
)

// Limits are the per-connection limits of a public server. The zero value
// means the defaults above.
type Limits struct {
	// ReadHeaderTimeout is the time allowed to read a request's headers and,
	// on TLS connections, to complete the handshake. Zero means
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may sit between
	// requests. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers. Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
}

func (l Limits) withDefaults() Limits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return l
}

// NewServer returns an http.Server for a public listener that serves h with
// lim. tlsConfig is nil for plain HTTP; for HTTPS serve it with
// ServeTLS(ln, "", "") so that net/http sets up HTTP/2 (tlsConfig offers "h2"
// through ALPN). logger receives net/http's own error lines (TLS handshake
// failures, bad requests) at debug level: on a public port they are noise
// made by scanners, not something to act on.
//
// There is deliberately no ReadTimeout or WriteTimeout: they bound the whole
// request or response, so they would cut a slow but legitimate upload or
// download. Slow header senders are stopped by ReadHeaderTimeout; idle
// keep-alive connections by IdleTimeout.
func NewServer(h http.Handler, tlsConfig *tls.Config, lim Limits, logger *slog.Logger) *http.Server {
	lim = lim.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}

// newTLSConfig returns the public TLS configuration around getCert: TLS 1.2
// or later, HTTP/2 preferred over HTTP/1.1 through ALPN, and any extra
// protocols (ACME's "acme-tls/1") after those.
func newTLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), extraProtos ...string) *tls.Config {
	return &tls.Config{
		GetCertificate: getCert,
		MinVersion:     tls.VersionTLS12,
		NextProtos:     append([]string{"h2", "http/1.1"}, extraProtos...),
	}
}
