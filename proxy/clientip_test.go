package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"reflect"
	"testing"
)

func TestForwardedClient(t *testing.T) {
	trusted := trustedProxies{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name string
		xff  []string
		want string
	}{
		{"no header", nil, "10.0.0.1"},
		{"one client", []string{"203.0.113.7"}, "203.0.113.7"},
		{"forged left part ignored", []string{"6.6.6.6, 203.0.113.7"}, "203.0.113.7"},
		{"trusted hops skipped", []string{"6.6.6.6, 203.0.113.7, 10.1.1.1", "10.2.2.2"}, "203.0.113.7"},
		{"all trusted gives leftmost", []string{"10.3.3.3, 10.1.1.1"}, "10.3.3.3"},
		{"garbage stops at last good", []string{"203.0.113.7, bogus, 10.1.1.1"}, "10.1.1.1"},
		{"garbage at the right gives peer", []string{"203.0.113.7, bogus"}, "10.0.0.1"},
		{"ipv6 and ports", []string{"[2001:db8::1]:4711, fd00::5"}, "2001:db8::1"},
		{"ipv4 with port", []string{"203.0.113.7:5555"}, "203.0.113.7"},
		{"mapped ipv4", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"empty entries", []string{" , 203.0.113.7 ,"}, "203.0.113.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := forwardedClient(tc.xff, trusted, "10.0.0.1"); got != tc.want {
				t.Errorf("forwardedClient(%q) = %q; want %q", tc.xff, got, tc.want)
			}
		})
	}
}

// TestTrustedProxies checks the headers the app sees, with and without a
// trusted peer; the default (nobody trusted) is TestHeadersLikeNginx.
func TestTrustedProxies(t *testing.T) {
	_, blue := app(t, "blue")
	h := NewHandler(Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	h.Route(blue)
	for _, tc := range []struct {
		name, peer string
		want       map[string]string
	}{
		{"trusted peer", "10.9.9.9:1234", map[string]string{
			"X-Real-Ip":         "203.0.113.7",
			"X-Forwarded-For":   "6.6.6.6, 203.0.113.7, 10.9.9.9",
			"X-Forwarded-Proto": "https",
			"X-Forwarded-Host":  "shop.example.com",
		}},
		{"untrusted peer", "198.51.100.1:1234", map[string]string{
			"X-Real-Ip":         "198.51.100.1",
			"X-Forwarded-For":   "6.6.6.6, 203.0.113.7, 198.51.100.1",
			"X-Forwarded-Proto": "http",
			"X-Forwarded-Host":  "evil.example",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://evil.example/headers", nil)
			r.RemoteAddr = tc.peer
			r.Header.Set("X-Forwarded-For", "6.6.6.6, 203.0.113.7")
			r.Header.Set("X-Forwarded-Proto", "https")
			r.Header.Set("X-Forwarded-Host", "shop.example.com")
			r.Header.Set("X-Real-Ip", "6.6.6.6")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var got map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("status %d, body %q: %v", w.Code, w.Body, err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q; want %q", k, got[k], v)
				}
			}
		})
	}
}

// TestSetForwardedMatchesSetXForwarded pins setForwarded, which sets the
// forwarding headers with one allocation, to what the Rewrite did before it:
// the client's X-Forwarded-For carried over, ProxyRequest.SetXForwarded, then
// X-Real-Ip with Header.Set.
func TestSetForwardedMatchesSetXForwarded(t *testing.T) {
	for _, trusted := range [][]netip.Prefix{nil, {netip.MustParsePrefix("10.0.0.0/8")}} {
		h := NewHandler(Options{TrustedProxies: trusted})
		for _, peer := range []string{"198.51.100.1:5555", "10.1.1.1:5555", "[2001:db8::1]:5555", "not-an-address", ""} {
			for _, xff := range [][]string{nil, {"203.0.113.7"}, {"6.6.6.6, 203.0.113.7", "10.2.2.2"}} {
				for _, tls := range []bool{false, true} {
					in := httptest.NewRequest(http.MethodGet, "http://shop.example.com/x", nil)
					in.RemoteAddr = peer
					if xff != nil {
						in.Header["X-Forwarded-For"] = xff
					}
					in.Header.Set("X-Forwarded-Proto", "https")
					in.Header.Set("X-Forwarded-Host", "lb.example.com")
					in.Header.Set("X-Real-Ip", "6.6.6.6")
					if !tls {
						in.TLS = nil
					} else if in.TLS == nil {
						in.TLS = httptest.NewRequest(http.MethodGet, "https://shop.example.com/x", nil).TLS
					}
					// As ReverseProxy hands them to Rewrite.
					outReq := func() *http.Request {
						out := in.Clone(in.Context())
						for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
							out.Header.Del(k)
						}
						return out
					}
					want := &httputil.ProxyRequest{In: in, Out: outReq()}
					if v, ok := in.Header["X-Forwarded-For"]; ok {
						want.Out.Header["X-Forwarded-For"] = v
					}
					want.SetXForwarded()
					if ip := h.clientIP(want); ip != "" {
						want.Out.Header.Set("X-Real-Ip", ip)
					}
					got := &httputil.ProxyRequest{In: in, Out: outReq()}
					h.setForwarded(got)
					if !reflect.DeepEqual(got.Out.Header, want.Out.Header) {
						t.Errorf("trusted %v, peer %q, X-Forwarded-For %q, TLS %v:\ngot  %v\nwant %v", trusted, peer, xff, tls, got.Out.Header, want.Out.Header)
					}
				}
			}
		}
	}
}
