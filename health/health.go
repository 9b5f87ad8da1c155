// Package health probes an app over HTTP the way a deploy needs it: one GET
// on a health path, with its own client, a per-try timeout, no redirects, and
// only a 2xx status counted as healthy.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// DefaultPath and DefaultTimeout are the probe defaults.
const (
	DefaultPath    = "/health"
	DefaultTimeout = 2 * time.Second
)

// ErrUnhealthy is wrapped by every error Check returns for an app that
// answered, but not with a 2xx status.
var ErrUnhealthy = errors.New("unhealthy")

// Checker probes apps. The zero value is not usable; create it with New. A
// Checker is safe for concurrent use.
type Checker struct {
	path   string
	client *http.Client
}

// New returns a Checker that GETs path (DefaultPath if empty) with a timeout
// per try (DefaultTimeout if zero).
func New(path string, timeout time.Duration) *Checker {
	if path == "" {
		path = DefaultPath
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Checker{
		path: path,
		client: &http.Client{
			Timeout: timeout,
			Transport: &http.Transport{
				Proxy:       nil,
				DialContext: (&net.Dialer{Timeout: timeout}).DialContext,
				// A fresh connection per probe: a health check must see
				// whether the app accepts new connections, and must not hold
				// a pooled connection that keeps an old app busy.
				DisableKeepAlives: true,
			},
			// A redirect from a health endpoint is a misconfiguration, not
			// health; report it as the status it is.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Path returns the path the Checker probes.
func (c *Checker) Path() string { return c.path }

// Check sends one probe to the app at addr ("host:port"). It returns nil for
// a 2xx answer, an error wrapping ErrUnhealthy for any other status, and the
// transport error (refused, timeout) otherwise.
func (c *Checker) Check(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+c.path, nil)
	if err != nil {
		return fmt.Errorf("health request for %s: %w", addr, err)
	}
	req.Header.Set("User-Agent", "baton-health")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", req.URL, unwrapURLError(err))
	}
	// The start of the body says why an app is unhealthy (Spring
	// Actuator's names the failing component); then drain a bounded
	// amount so a chatty endpoint cannot hold us.
	head := make([]byte, BodyExcerpt)
	n, _ := io.ReadFull(resp.Body, head)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if ex := excerpt(head[:n]); ex != "" {
			return fmt.Errorf("GET %s: status %d: %w: %s", req.URL, resp.StatusCode, ErrUnhealthy, ex)
		}
		return fmt.Errorf("GET %s: status %d: %w", req.URL, resp.StatusCode, ErrUnhealthy)
	}
	return nil
}

// BodyExcerpt is how many bytes of an unhealthy answer's body its error
// shows.
const BodyExcerpt = 200

// excerpt makes b fit on one line of an error: control characters (line
// breaks included) become spaces, a cut multi-byte character is dropped,
// and surrounding space is trimmed.
func excerpt(b []byte) string {
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}

// unwrapURLError drops the *url.Error layer, whose message repeats the URL.
func unwrapURLError(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok {
		if inner := u.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
