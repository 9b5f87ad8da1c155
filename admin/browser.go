package admin

import (
	"fmt"
	"mime"
	"net"
	"net/http"
)

// A web page open in a browser on baton's host can send requests to the
// admin API: a form post or a no-cors fetch to 127.0.0.1:9900, or, after
// DNS rebinding, requests to its own name that resolve to 127.0.0.1. The
// browser does not let the page read the answer, but a POST acts anyway.
// Three rules stop this, none of which a CLI, curl or CI job notices:
//
//   - without a token, the Host header must be a loopback address or
//     localhost: a rebound page sends its own name;
//   - whatever the token, a request whose Origin or Sec-Fetch-Site says it
//     comes from another site is refused (net/http's CrossOriginProtection);
//   - a POST must say Content-Type: application/json (or
//     application/octet-stream for an upload), which a page can send to
//     another site only after a CORS preflight that baton never grants.
//     The types a form can send, and none at all, are refused, so an empty
//     body without a JSON type is never "switch to the other colour".
//
// Each refusal is a 403 with a JSON reason, before anything is read.

// crossOrigin has no trusted origins and no bypasses: the admin API serves
// no pages that post to it from elsewhere.
var crossOrigin = http.NewCrossOriginProtection()

// checkBrowser refuses a request that a page on another site made through
// a browser.
func (s *Server) checkBrowser(r *http.Request) error {
	if s.cfg.Token == "" {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host // no port
		}
		if !isLoopbackHost(host) {
			return withStatus(http.StatusForbidden, fmt.Errorf("Host %q is not a loopback address or localhost: without a token the admin API answers only requests to 127.0.0.1, [::1] or localhost (a web page reaching it through DNS rebinding sends its own name)", r.Host))
		}
	}
	// CrossOriginProtection lets reads through (a page cannot read the
	// answer without CORS, which baton never grants); reads of the API from
	// another site are refused all the same, so that no page can hold a
	// stream open here. The status page itself may be linked to.
	if site := r.Header.Get("Sec-Fetch-Site"); r.URL.Path != "/" && (site == "cross-site" || site == "same-site") {
		return withStatus(http.StatusForbidden, fmt.Errorf("%s %s: refused a request from another site's page (Sec-Fetch-Site %q)", r.Method, r.URL.Path, site))
	}
	if err := crossOrigin.Check(r); err != nil {
		return withStatus(http.StatusForbidden, fmt.Errorf("%s %s: refused a cross-origin request from a browser (Origin %q, Sec-Fetch-Site %q): %w",
			r.Method, r.URL.Path, r.Header.Get("Origin"), r.Header.Get("Sec-Fetch-Site"), err))
	}
	return nil
}

// isUploadPath reports whether p is an endpoint that takes the artifact
// itself as the body: a deploy or a rollout, of the only service or of a
// named one.
func isUploadPath(p string) bool {
	if p == "/v1/deploy" || p == "/v1/rollout" {
		return true
	}
	op, ok := serviceOp(p)
	return ok && (op == "deploy" || op == "rollout")
}

// formTypes are the Content-Types a web page may send to another site
// without a CORS preflight (the Fetch standard's CORS-safelisted ones).
var formTypes = map[string]bool{"text/plain": true, "application/x-www-form-urlencoded": true, "multipart/form-data": true}

// checkContentType refuses a POST that is not JSON (or an upload, where
// the endpoint takes one): a type a form can send, or none, is 403, any
// other type 415.
func checkContentType(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	raw := r.Header.Get("Content-Type")
	ct, _, err := mime.ParseMediaType(raw)
	if raw != "" && err != nil {
		return withStatus(http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: %w", raw, err))
	}
	if ct == "application/json" || (ct == "application/octet-stream" && isUploadPath(r.URL.Path)) {
		return nil
	}
	want := "application/json"
	if isUploadPath(r.URL.Path) {
		want += ", or the artifact itself as application/octet-stream"
	}
	if ct == "" || formTypes[ct] {
		what := "no Content-Type"
		if ct != "" {
			what = fmt.Sprintf("Content-Type %q", ct)
		}
		return withStatus(http.StatusForbidden, fmt.Errorf("%s %s with %s: send %s (a request without it could come from a web page's form)", r.Method, r.URL.Path, what, want))
	}
	return withStatus(http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: send %s", ct, want))
}
