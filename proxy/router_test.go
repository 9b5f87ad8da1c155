package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// routedFrontEnds starts three services (shop and api by host, shop-admin
// by path under shop's host, stripping its prefix), each its own echo app
// behind its own Handler, and serves one routing table through a
// FastServer and through a plain http.Server around the Router.
func routedFrontEnds(t *testing.T, obs NoRouteObserver) (fast *FastServer, fastAddr, refAddr string) {
	t.Helper()
	handler := func(service string) *Handler {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(routedEcho{Service: service, RequestURI: r.RequestURI, Host: r.Host})
		}))
		t.Cleanup(app.Close)
		h := NewHandler(Options{})
		u, err := NewUpstream(service+"-blue", app.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		h.Route(u)
		t.Cleanup(u.CloseIdleConnections)
		return h
	}
	table, err := NewRouteTable([]Route{
		{Service: "shop", Hosts: []string{"shop.example.com", "www.shop.example.com"}, Handler: handler("shop")},
		{Service: "api", Hosts: []string{"api.example.com"}, Handler: handler("api")},
		{Service: "shop-admin", Hosts: []string{"shop.example.com"}, PathPrefix: "/admin", StripPrefix: true, Handler: handler("shop-admin")},
		{Service: "tenants", Hosts: []string{"*.tenants.example.com"}, Handler: handler("tenants")},
	})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(s interface{ Serve(net.Listener) error }, cleanup func()) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(ln)
		t.Cleanup(func() { ln.Close(); cleanup() })
		return ln.Addr().String()
	}
	rt := NewRouter(table, nil, obs)
	fb := &http.Server{Handler: rt, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	fast = &FastServer{Router: rt, Fallback: fb}
	fastAddr = serve(fast, func() { fb.Close(); fast.Close() })
	ref := &http.Server{Handler: NewRouter(table, nil, obs), ReadHeaderTimeout: 5 * time.Second}
	refAddr = serve(ref, func() { ref.Close() })
	return fast, fastAddr, refAddr
}

// routedEcho is what a routed app saw.
type routedEcho struct{ Service, RequestURI, Host string }

type countingNoRoute struct {
	mu    sync.Mutex
	hosts []string
}

func (c *countingNoRoute) NoRoute(r RequestInfo, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts = append(c.hosts, r.Host+" "+r.Path)
}

// TestRoutingOnBothFrontEnds sends each request, as raw bytes, through the
// fast path and through net/http, and checks that both pick the same
// service, send it the same target, and answer a request no service claims
// with the same 404.
func TestRoutingOnBothFrontEnds(t *testing.T) {
	obs := &countingNoRoute{}
	fast, fastAddr, refAddr := routedFrontEnds(t, obs)
	cases := []struct {
		name, host, target string
		wantService        string // "" for 404
		wantURI            string // what the app must receive
		fastServes         bool
	}{
		{"host", "shop.example.com", "/cart?x=1", "shop", "/cart?x=1", true},
		{"second host, other case, port", "WWW.Shop.Example.COM:8080", "/", "shop", "/", true},
		{"other host", "api.example.com", "/v1/orders", "api", "/v1/orders", true},
		{"prefix, stripped", "shop.example.com", "/admin/users?page=2", "shop-admin", "/users?page=2", true},
		{"the prefix itself, stripped to /", "shop.example.com", "/admin", "shop-admin", "/", true},
		{"the prefix with a query", "shop.example.com", "/admin?x=1", "shop-admin", "/?x=1", true},
		{"not on a segment boundary", "shop.example.com", "/administrator", "shop", "/administrator", true},
		{"prefix on another host", "api.example.com", "/admin/users", "api", "/admin/users", true},
		{"wildcard", "acme.tenants.example.com", "/", "tenants", "/", true},
		{"dot segments resolved before routing", "shop.example.com", "/admin/../cart", "shop", "/admin/../cart", false},
		{"dot segments into the prefix", "shop.example.com", "/x/../admin/users", "shop-admin", "/users", false},
		{"escaped prefix", "shop.example.com", "/adm%69n/users", "shop-admin", "/users", false},
		{"unknown host", "evil.example.net", "/", "", "", true},
		{"no wildcard for the bare name", "tenants.example.com", "/", "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := "GET " + c.target + " HTTP/1.1\r\nHost: " + c.host + "\r\n\r\n"
			before := fast.servedFast.Load()
			for _, fe := range []struct{ name, addr string }{{"fast", fastAddr}, {"net/http", refAddr}} {
				resps, bodies := exchange(t, fe.addr, raw, "GET", 1)
				if len(resps) != 1 {
					t.Fatalf("%s: no answer", fe.name)
				}
				if c.wantService == "" {
					if resps[0].StatusCode != 404 || strings.TrimSpace(bodies[0]) != msgNoRoute {
						t.Errorf("%s: %d %q; want 404 %q", fe.name, resps[0].StatusCode, bodies[0], msgNoRoute)
					}
					continue
				}
				var got routedEcho
				if err := json.Unmarshal([]byte(bodies[0]), &got); err != nil || resps[0].StatusCode != 200 {
					t.Fatalf("%s: %d %q; want the app's echo", fe.name, resps[0].StatusCode, bodies[0])
				}
				if got.Service != c.wantService {
					t.Errorf("%s: served by %s; want %s", fe.name, got.Service, c.wantService)
				}
				if got.RequestURI != c.wantURI {
					t.Errorf("%s: app got %q; want %q", fe.name, got.RequestURI, c.wantURI)
				}
				if got.Host != c.host {
					t.Errorf("%s: app saw Host %q; want the client's %q", fe.name, got.Host, c.host)
				}
			}
			if served := fast.servedFast.Load() > before; served != c.fastServes {
				t.Errorf("fast path served it: %v; want %v", served, c.fastServes)
			}
		})
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.hosts) != 4 {
		t.Errorf("NoRoute calls: %q; want 4 (two requests, each through both front ends)", obs.hosts)
	}
}
