package edge

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRedirect(t *testing.T) {
	challenge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "challenge "+r.URL.Path)
	})
	for _, tc := range []struct {
		name, method, target, host, port string
		wantCode                         int
		wantLocation, wantBody           string
	}{
		{"path and query kept", "GET", "/shop/cart?id=7&x=%20", "example.com", "443", 301, "https://example.com/shop/cart?id=7&x=%20", ""},
		{"port of the Host header dropped", "GET", "/", "example.com:80", "443", 301, "https://example.com/", ""},
		{"non-standard HTTPS port", "HEAD", "/a", "example.com:8080", "8443", 301, "https://example.com:8443/a", ""},
		{"POST stays POST", "POST", "/form", "example.com", "443", 308, "https://example.com/form", ""},
		{"IPv6 literal", "GET", "/", "[2001:db8::1]:80", "443", 301, "https://[2001:db8::1]/", ""},
		{"absolute-form target stays on Host", "GET", "http://evil.example/x", "example.com", "443", 301, "https://example.com/x", ""},
		{"double slash stays a path", "GET", "//evil.example/x", "example.com", "443", 301, "https://example.com//evil.example/x", ""},
		{"ACME challenge passed through", "GET", "/.well-known/acme-challenge/tok123", "example.com", "443", 200, "", "challenge /.well-known/acme-challenge/tok123"},
		{"missing host", "GET", "/", "", "443", 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, tc.target, nil)
			r.Host = tc.host
			w := httptest.NewRecorder()
			Redirect(tc.port, challenge).ServeHTTP(w, r)
			if w.Code != tc.wantCode {
				t.Errorf("status = %d; want %d", w.Code, tc.wantCode)
			}
			if got := w.Header().Get("Location"); got != tc.wantLocation {
				t.Errorf("Location = %q; want %q", got, tc.wantLocation)
			}
			if tc.wantBody != "" && !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Errorf("body = %q; want %q", w.Body, tc.wantBody)
			}
		})
	}
}

func TestRedirectNilChallengeIs404(t *testing.T) {
	r := httptest.NewRequest("GET", "/.well-known/acme-challenge/x", nil)
	w := httptest.NewRecorder()
	Redirect("443", nil).ServeHTTP(w, r)
	if w.Code != http.StatusNotFound {
		t.Errorf("status = %d; want 404", w.Code)
	}
}
