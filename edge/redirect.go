package edge

import (
	"net"
	"net/http"
	"strings"
)

// ACMEChallengePrefix is the path under which ACME HTTP-01 challenges are
// fetched (RFC 8555 section 8.3).
const ACMEChallengePrefix = "/.well-known/acme-challenge/"

// Redirect returns the handler of the plain-HTTP port when TLS is on: every
// request is sent to the same host, path and query over HTTPS on httpsPort
// ("443" is left out of the URL), with 301 for GET and HEAD and 308 for
// other methods so that a POST stays a POST.
//
// Requests under ACMEChallengePrefix are not redirected: they go to
// challenge, so that a CA can validate over plain HTTP. Wrap the result in
// the ACME handler (ACME.HTTPHandler) to answer baton's own challenges; pass
// the proxy as challenge to let an ACME client of the app's answer others. A
// nil challenge answers them 404.
//
// A request without a Host header (HTTP/1.0) gets 400: there is nowhere to
// send it.
func Redirect(httpsPort string, challenge http.Handler) http.Handler {
	if challenge == nil {
		challenge = http.NotFoundHandler()
	}
	suffix := ""
	if httpsPort != "" && httpsPort != "443" {
		suffix = ":" + httpsPort
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, ACMEChallengePrefix) {
			challenge.ServeHTTP(w, r)
			return
		}
		host := hostOnly(r.Host)
		if host == "" {
			http.Error(w, "400 Bad Request: missing Host header", http.StatusBadRequest)
			return
		}
		// RequestURI is the path and query only, even if the client sent
		// an absolute URL, so the target is always this host.
		target := "https://" + host + suffix + r.URL.RequestURI()
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			code = http.StatusPermanentRedirect
		}
		http.Redirect(w, r, target, code)
	})
}

// hostOnly strips the port from a Host header value, keeping the brackets of
// an IPv6 literal.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return hostport
}
