package proxy

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Route is one service's claim on requests: the hosts and the path prefix
// it serves, and the Handler (the service's live upstream and canary) that
// serves them.
type Route struct {
	// Service names the service, for logs and metrics.
	Service string
	// Hosts are exact names ("shop.example.com") or one leading wildcard
	// label ("*.example.com": a.example.com, not example.com nor
	// a.b.example.com), matched case-insensitively and without the port.
	// Empty makes this the default route, for hosts no route names.
	Hosts []string
	// PathPrefix limits the route to paths under it, on a segment boundary:
	// "/admin" matches /admin and /admin/x, not /administrator. "" and "/"
	// match every path.
	PathPrefix string
	// StripPrefix removes PathPrefix from the path before the request goes
	// to the app, keeping a leading slash (/admin/x becomes /x, /admin /).
	StripPrefix bool
	// Handler serves the route's requests. Required.
	Handler *Handler
}

// RouteTable picks the route of a request by host, then by the longest
// matching path prefix. It is immutable once built, so requests read it
// without a lock: a reload builds a new one and swaps the pointer to it.
// The zero value routes nothing.
type RouteTable struct {
	hosts    HostMap[*hostRoutes]
	fallback *hostRoutes // routes without hosts
	routes   []*Route
	byPath   bool // some route has a path prefix
}

// hostRoutes are the routes of one host pattern, longest prefix first.
type hostRoutes struct {
	routes []*Route
}

// RouteError is one problem NewRouteTable found, with the service it is
// about (for two services that clash, the later one), so that a caller can
// say where in its configuration the problem is.
type RouteError struct {
	Service string
	Err     error
}

func (e *RouteError) Error() string { return e.Err.Error() }
func (e *RouteError) Unwrap() error { return e.Err }

// NewRouteTable builds a table from routes, checking each host name and
// prefix and that no two routes claim the same host and prefix. The error
// joins one *RouteError per problem found.
func NewRouteTable(routes []Route) (*RouteTable, error) {
	t := &RouteTable{}
	var errs []error
	type claim struct{ host, prefix string }
	claimed := map[claim]string{}
	defaults := []string{}
	for i := range routes {
		r := new(Route)
		*r = routes[i]
		r.PathPrefix = normalizePrefix(r.PathPrefix)
		t.byPath = t.byPath || r.PathPrefix != ""
		if r.Handler == nil {
			errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("route %s: no handler", r.Service)})
			continue
		}
		if err := checkPrefix(r.PathPrefix); err != nil {
			errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("service %s: path_prefix %q: %w", r.Service, routes[i].PathPrefix, err)})
			continue
		}
		if len(r.Hosts) == 0 {
			defaults = append(defaults, r.Service)
			if len(defaults) > 1 {
				errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("services %s: more than one service without hosts; at most one may be the default", strings.Join(defaults, ", "))})
				continue
			}
			if r.PathPrefix != "" {
				errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("service %s: path_prefix %q without hosts: the default service takes every path of the hosts no service names; give it hosts", r.Service, r.PathPrefix)})
				continue
			}
			t.fallback = &hostRoutes{routes: []*Route{r}}
			t.routes = append(t.routes, r)
			continue
		}
		ok := true
		r.Hosts = append([]string(nil), r.Hosts...) // lower-cased below: the caller's stay as given
		for j, h := range r.Hosts {
			name := strings.ToLower(strings.TrimSuffix(h, "."))
			if err := checkHostPattern(name); err != nil {
				errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("service %s: host %q: %w", r.Service, h, err)})
				ok = false
				continue
			}
			r.Hosts[j] = name
			c := claim{name, r.PathPrefix}
			if other, dup := claimed[c]; dup {
				where := "every path"
				if r.PathPrefix != "" {
					where = "path_prefix " + r.PathPrefix
				}
				errs = append(errs, &RouteError{Service: r.Service, Err: fmt.Errorf("services %s and %s both claim host %s, %s", other, r.Service, name, where)})
				ok = false
				continue
			}
			claimed[c] = r.Service
		}
		if !ok {
			continue
		}
		for _, name := range r.Hosts {
			hr, ok := t.hosts.Get(name)
			if !ok {
				hr = &hostRoutes{}
				t.hosts.Add(name, hr)
			}
			hr.routes = append(hr.routes, r)
		}
		t.routes = append(t.routes, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, m := range []map[string]*hostRoutes{t.hosts.exact, t.hosts.wildcard} {
		for _, hr := range m {
			sort.SliceStable(hr.routes, func(i, j int) bool { return len(hr.routes[i].PathPrefix) > len(hr.routes[j].PathPrefix) })
		}
	}
	return t, nil
}

// Routes returns the table's routes in the order they were given.
func (t *RouteTable) Routes() []*Route { return t.routes }

// Lookup returns the route for a request with the given Host header and
// path (without the query), or nil if no route claims it. An exact host beats a wildcard; both
// beat the default route. Within a host the longest matching prefix wins;
// a host whose prefixes all miss falls through to the wildcard, then the
// default. It does not allocate.
func (t *RouteTable) Lookup(host, path string) *Route { return lookup(t, host, path) }

// LookupBytes is Lookup for the fast path's header bytes.
func (t *RouteTable) LookupBytes(host, path []byte) *Route { return lookup(t, host, path) }

func lookup[S ~string | ~[]byte](t *RouteTable, host, path S) *Route {
	if t == nil {
		return nil
	}
	var found *Route
	if lookupHost(&t.hosts, host, func(hr *hostRoutes) bool { found = matchPrefix(hr, path); return found != nil }) {
		return found
	}
	if t.fallback != nil {
		return t.fallback.routes[0]
	}
	return nil
}

func matchPrefix[S ~string | ~[]byte](hr *hostRoutes, path S) *Route {
	for _, r := range hr.routes {
		if hasPathPrefix(path, r.PathPrefix) {
			return r
		}
	}
	return nil
}

// hasPathPrefix reports whether path is prefix or below it (prefix is
// normalized: "" or "/x" without a trailing slash).
func hasPathPrefix[S ~string | ~[]byte](path S, prefix string) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/' || path[len(prefix)] == '?'
}

// StripPath returns path with the route's prefix removed if the route
// strips it, keeping a leading slash; otherwise path itself.
func (r *Route) StripPath(path string) string {
	if !r.StripPrefix || r.PathPrefix == "" {
		return path
	}
	rest := path[len(r.PathPrefix):]
	if rest == "" || rest[0] != '/' {
		return "/" + rest
	}
	return rest
}

// normalizePrefix makes "/" and "" the same catch-all and drops a trailing
// slash, so "/admin/" and "/admin" claim the same paths.
func normalizePrefix(p string) string {
	for len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	if p == "/" {
		return ""
	}
	return p
}

func checkPrefix(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return errors.New("must start with /")
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == '?' || c == '#' || c == 0x7f {
			return fmt.Errorf("has %q, which a path prefix cannot hold", c)
		}
	}
	return nil
}

// checkHostPattern checks a lower-case host name or "*." wildcard.
func checkHostPattern(name string) error {
	labels := name
	if rest, wild := strings.CutPrefix(name, "*."); wild {
		labels = rest
		if !strings.Contains(labels, ".") {
			return errors.New("a wildcard needs at least two labels after it (*.example.com)")
		}
	}
	if labels == "" || len(labels) > 253 {
		return errors.New("want a DNS name")
	}
	for _, l := range strings.Split(labels, ".") {
		if l == "" || len(l) > 63 {
			return errors.New("want a DNS name: empty or over-long label")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
			if !ok {
				if c == '*' {
					return errors.New("only one leading wildcard label is allowed (*.example.com)")
				}
				return fmt.Errorf("want a DNS name: %q is not allowed", c)
			}
		}
	}
	return nil
}
