package proxy

import (
	"fmt"
	"strings"
	"testing"
)

func mustTable(t testing.TB, routes ...Route) *RouteTable {
	t.Helper()
	for i := range routes {
		if routes[i].Handler == nil {
			routes[i].Handler = NewHandler(Options{})
		}
	}
	tab, err := NewRouteTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestRouteTableLookup(t *testing.T) {
	tab := mustTable(t,
		Route{Service: "shop", Hosts: []string{"shop.example.com", "WWW.shop.example.com"}},
		Route{Service: "api", Hosts: []string{"api.example.com"}},
		Route{Service: "shop-admin", Hosts: []string{"shop.example.com"}, PathPrefix: "/admin"},
		Route{Service: "shop-admin-v2", Hosts: []string{"shop.example.com"}, PathPrefix: "/admin/v2/"},
		Route{Service: "tenants", Hosts: []string{"*.tenants.example.com"}},
		Route{Service: "vip", Hosts: []string{"vip.tenants.example.com"}},
		Route{Service: "wild-docs", Hosts: []string{"*.example.com"}, PathPrefix: "/docs"},
		Route{Service: "default"},
	)
	cases := []struct{ host, path, want string }{
		{"shop.example.com", "/", "shop"},
		{"SHOP.Example.COM", "/cart", "shop"},              // case-insensitive
		{"shop.example.com:8443", "/cart", "shop"},         // port ignored
		{"shop.example.com.", "/cart", "shop"},             // trailing dot
		{"www.shop.example.com", "/", "shop"},              // second name, given in upper case
		{"shop.example.com", "/admin", "shop-admin"},       // the prefix itself
		{"shop.example.com", "/admin/users", "shop-admin"}, // below it
		{"shop.example.com", "/administrator", "shop"},     // not on a segment boundary
		{"shop.example.com", "/admin/v2", "shop-admin-v2"}, // longest prefix wins
		{"shop.example.com", "/admin/v2/x", "shop-admin-v2"},
		{"shop.example.com", "/admin/v22", "shop-admin"},
		{"api.example.com", "/v1/orders", "api"},
		{"a.tenants.example.com", "/", "tenants"},    // one wildcard label
		{"vip.tenants.example.com", "/", "vip"},      // exact beats wildcard
		{"a.b.tenants.example.com", "/", "default"},  // not two labels
		{"tenants.example.com", "/", "default"},      // not the bare name
		{"api.example.com", "/docs", "api"},          // exact host, whose "/" catches it
		{"blog.example.com", "/docs/x", "wild-docs"}, // a wildcard with a prefix
		{"blog.example.com", "/", "default"},         // wildcard's prefix misses: default
		{"[::1]:8080", "/", "default"},
		{"", "/", "default"},
		{strings.Repeat("a", 300) + ".example.com", "/", "default"},
	}
	for _, c := range cases {
		r := tab.Lookup(c.host, c.path)
		rb := tab.LookupBytes([]byte(c.host), []byte(c.path))
		if r == nil || r.Service != c.want {
			t.Errorf("Lookup(%q, %q) = %v; want %s", c.host, c.path, r, c.want)
		}
		if rb != r {
			t.Errorf("LookupBytes(%q, %q) = %v; want what Lookup gives, %v", c.host, c.path, rb, r)
		}
	}
}

func TestRouteTableWithoutDefaultReturnsNil(t *testing.T) {
	tab := mustTable(t, Route{Service: "api", Hosts: []string{"api.example.com"}, PathPrefix: "/v1"})
	for _, c := range [][2]string{{"other.example.com", "/"}, {"api.example.com", "/v2"}, {"api.example.com", "/"}} {
		if r := tab.Lookup(c[0], c[1]); r != nil {
			t.Errorf("Lookup(%q, %q) = %s; want nil (404)", c[0], c[1], r.Service)
		}
	}
	var none *RouteTable
	if none.Lookup("a", "/") != nil {
		t.Error("a nil table routed a request")
	}
}

func TestRouteTableRejectsConflictsAndBadNames(t *testing.T) {
	h := NewHandler(Options{})
	_, err := NewRouteTable([]Route{
		{Service: "a", Hosts: []string{"x.example.com"}, Handler: h},
		{Service: "b", Hosts: []string{"X.example.com"}, PathPrefix: "/", Handler: h}, // same host, same (catch-all) prefix
		{Service: "c", Hosts: []string{"x.example.com"}, PathPrefix: "/admin", Handler: h},
		{Service: "d", Hosts: []string{"x.example.com"}, PathPrefix: "/admin/", Handler: h}, // same as /admin
		{Service: "e", Hosts: []string{"*.*.example.com"}, Handler: h},
		{Service: "f", Hosts: []string{"*.com"}, Handler: h},
		{Service: "g", Hosts: []string{"bad host"}, Handler: h},
		{Service: "h", Hosts: []string{"y.example.com"}, PathPrefix: "admin", Handler: h},
		{Service: "i", Handler: h},
		{Service: "j", Handler: h},
	})
	if err == nil {
		t.Fatal("NewRouteTable accepted conflicting routes")
	}
	for _, want := range []string{
		"services a and b both claim host x.example.com, every path",
		"services c and d both claim host x.example.com, path_prefix /admin",
		`service e: host "*.*.example.com": only one leading wildcard label`,
		`service f: host "*.com": a wildcard needs at least two labels`,
		`service g: host "bad host"`,
		`service h: path_prefix "admin": must start with /`,
		"services i, j: more than one service without hosts",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
}

func TestRouteStripPath(t *testing.T) {
	r := Route{PathPrefix: "/admin", StripPrefix: true}
	for in, want := range map[string]string{"/admin": "/", "/admin/": "/", "/admin/users": "/users"} {
		if got := r.StripPath(in); got != want {
			t.Errorf("StripPath(%q) = %q; want %q", in, got, want)
		}
	}
	keep := Route{PathPrefix: "/admin"}
	if got := keep.StripPath("/admin/users"); got != "/admin/users" {
		t.Errorf("without StripPrefix: %q; want the path unchanged", got)
	}
}

func TestRouteTableLookupDoesNotAllocate(t *testing.T) {
	tab := benchTable(t, 50)
	host, path := []byte("Site-37.Example.com:443"), []byte("/cart/items")
	allocs := testing.AllocsPerRun(1000, func() {
		if r := tab.LookupBytes(host, path); r == nil || r.Service != "site-37" {
			t.Fatalf("routed to %v", r)
		}
		if r := tab.Lookup("site-12.example.com", "/admin/x"); r == nil || r.Service != "site-12-admin" {
			t.Fatalf("routed to %v", r)
		}
	})
	if allocs != 0 {
		t.Errorf("lookup allocates %.1f times; want 0", allocs)
	}
}

// benchTable has n sites, each with a catch-all and an /admin service.
func benchTable(t testing.TB, n int) *RouteTable {
	var routes []Route
	h := NewHandler(Options{})
	for i := 0; i < n; i++ {
		host := fmt.Sprintf("site-%d.example.com", i)
		routes = append(routes,
			Route{Service: fmt.Sprintf("site-%d", i), Hosts: []string{host}, Handler: h},
			Route{Service: fmt.Sprintf("site-%d-admin", i), Hosts: []string{host}, PathPrefix: "/admin", Handler: h})
	}
	return mustTable(t, routes...)
}

func BenchmarkRouteLookup(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("services=%d", 2*n), func(b *testing.B) {
			tab := benchTable(b, n)
			host := []byte(fmt.Sprintf("site-%d.example.com", n-1))
			path := []byte("/cart/items")
			b.ReportAllocs()
			for b.Loop() {
				if tab.LookupBytes(host, path) == nil {
					b.Fatal("no route")
				}
			}
		})
	}
}
