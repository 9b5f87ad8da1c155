package proxy

import (
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"
)

// Router is the public entry point of several services: it looks each
// request's route up in its RouteTable (host, then longest path prefix)
// and hands the request to that route's Handler, which forwards it to the
// service's live upstream. A request no route claims gets 404.
//
// The table sits behind an atomic pointer: a reload builds a new table and
// swaps it in with SetTable, requests already routed finish on the
// Handler they got, and a lookup takes no lock and allocates nothing.
// FastServer looks requests up in the same table. A Router is safe for
// concurrent use; create it with NewRouter.
type Router struct {
	table    atomic.Pointer[RouteTable]
	logger   *slog.Logger
	noRoute  NoRouteObserver
	noRoutes atomic.Uint64
}

// NoRouteObserver is told about each request that no route claims. It is
// called on the request path and must be cheap and safe for concurrent use.
type NoRouteObserver interface {
	NoRoute(r RequestInfo, d time.Duration)
}

// RequestInfo is what observers learn of a request: a small value of its
// own, valid after the call, on both front ends alike.
type RequestInfo struct {
	Method, Host, Path, Proto, RemoteAddr string
}

// NewRouter returns a Router serving t (nil: every request gets 404 until
// SetTable). logger (nil: none) logs requests no route claims; obs (nil:
// none) counts them.
func NewRouter(t *RouteTable, logger *slog.Logger, obs NoRouteObserver) *Router {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Router{logger: logger, noRoute: obs}
	if t != nil {
		r.table.Store(t)
	}
	return r
}

// SingleRoute returns a Router whose only route, the default, is h: every
// host and path goes to h, as with one app behind baton.
func SingleRoute(h *Handler) *Router {
	t, err := NewRouteTable([]Route{{Service: "default", Handler: h}})
	if err != nil {
		panic(err) // a default route with a handler is always valid
	}
	return NewRouter(t, h.logger, nil)
}

// SetTable makes t the routing table for the next request and returns the
// one it replaces.
func (rt *Router) SetTable(t *RouteTable) (previous *RouteTable) { return rt.table.Swap(t) }

// Table returns the routing table in use.
func (rt *Router) Table() *RouteTable { return rt.table.Load() }

// NoRoutes returns how many requests no route claimed.
func (rt *Router) NoRoutes() uint64 { return rt.noRoutes.Load() }

// msgNoRoute is the body of the 404 for a request no service claims. It
// names nothing internal: a scanner learns nothing from it.
const msgNoRoute = "404 Not Found: no site here"

// ServeHTTP routes r by its Host header and path.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := cleanPath(r.URL.Path)
	route := rt.table.Load().Lookup(r.Host, p)
	if route == nil {
		start := time.Now()
		http.Error(w, msgNoRoute, http.StatusNotFound)
		rt.notFound(RequestInfo{Method: r.Method, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, RemoteAddr: r.RemoteAddr}, time.Since(start))
		return
	}
	if route.StripPrefix && route.PathPrefix != "" {
		r = stripRequest(r, route, p)
	}
	route.Handler.ServeHTTP(w, r)
}

// notFound logs and counts a request no route claims.
func (rt *Router) notFound(info RequestInfo, d time.Duration) {
	rt.noRoutes.Add(1)
	rt.logger.Info("no service for request", "host", info.Host, "method", info.Method, "path", info.Path, "remote", info.RemoteAddr)
	if rt.noRoute != nil {
		rt.noRoute.NoRoute(info, d)
	}
}

// stripRequest returns a shallow copy of r whose path is p (r's path as
// routed) without the route's prefix.
func stripRequest(r *http.Request, route *Route, p string) *http.Request {
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	u.Path = route.StripPath(p)
	u.RawPath = "" // URL escapes the stripped path afresh
	r2.URL = &u
	return r2
}

// cleanPath returns the path a request is routed by: p with dot segments
// and repeated slashes resolved, so that /admin/../shop is not routed as
// /admin (nginx and Caddy match the same way). A trailing slash is kept.
// It allocates only for a path that needs resolving.
func cleanPath(p string) string {
	if !needsCleaning(p) {
		return p
	}
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// needsCleaning reports whether path has a dot segment or an empty one.
func needsCleaning[S ~string | ~[]byte](p S) bool {
	if len(p) == 0 || p[0] != '/' {
		return true
	}
	for i := 0; i+1 < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		switch p[i+1] {
		case '/':
			return true
		case '.':
			// "/." then the end, "/" or ".": a dot segment.
			if i+2 == len(p) || p[i+2] == '/' || (p[i+2] == '.' && (i+3 == len(p) || p[i+3] == '/')) {
				return true
			}
		}
	}
	return false
}
