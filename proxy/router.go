package proxy

import (
	"crypto/tls"
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
	table       atomic.Pointer[RouteTable]
	authority   atomic.Pointer[authorityBox]
	logger      *slog.Logger
	noRoute     NoRouteObserver
	noRoutes    atomic.Uint64
	misdirected atomic.Uint64
}

// Authority tells the Router which hosts a TLS connection may ask for:
// those the certificate baton served on it covers. A request for any
// other host gets 421 Misdirected Request (RFC 9110 section 15.5.20), on
// both front ends. This is what makes HTTP/2 connection coalescing safe:
// a browser reuses a connection for another host when it resolves to the
// same address and the connection's certificate covers that host, and a
// 421 sends it to a connection of its own when the certificate does not;
// it also stops a client from reaching one service through a handshake
// made for another.
//
// Covers must be cheap and safe for concurrent use: it runs for each
// request on a TLS connection (the fast path asks once per connection and
// Host).
type Authority interface {
	// Covers reports whether the certificate served to a client that asked
	// for serverName (its SNI name; "" when it sent none) covers host, a
	// Host header as sent: any case, maybe with a port.
	Covers(serverName, host string) bool
}

// authorityBox holds an Authority behind an atomic pointer.
type authorityBox struct{ a Authority }

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

// SetAuthority makes a the judge of which hosts a TLS connection may ask
// for (nil: any host, as on plain HTTP). Set it before serving TLS.
func (rt *Router) SetAuthority(a Authority) {
	if a == nil {
		rt.authority.Store(nil)
		return
	}
	rt.authority.Store(&authorityBox{a})
}

// Misdirected returns how many requests were answered 421.
func (rt *Router) Misdirected() uint64 { return rt.misdirected.Load() }

// msgMisdirected is the body of the 421 for a request whose host the
// connection's certificate does not cover.
const msgMisdirected = "421 Misdirected Request: this connection's certificate is not for that host; connect again for it"

// isMisdirected reports whether a request for host on a connection with TLS
// state st (nil on plain HTTP) must be answered 421: the one rule both front
// ends call. It counts and logs (at debug level: scanners that connect by
// IP and send any Host make this noise) the requests it refuses.
func (rt *Router) isMisdirected(st *tls.ConnectionState, host, remoteAddr string) bool {
	if st == nil {
		return false
	}
	box := rt.authority.Load()
	if box == nil || box.a.Covers(st.ServerName, host) {
		return false
	}
	rt.misdirected.Add(1)
	rt.logger.Debug("misdirected request: the certificate does not cover its host", "host", host, "sni", st.ServerName, "remote", remoteAddr)
	return true
}

// msgNoRoute is the body of the 404 for a request no service claims. It
// names nothing internal: a scanner learns nothing from it.
const msgNoRoute = "404 Not Found: no site here"

// ServeHTTP routes r by its Host header and path. On a TLS connection, a
// Host that the connection's certificate does not cover gets 421 (see
// Authority) before any route is looked up.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rt.isMisdirected(r.TLS, r.Host, r.RemoteAddr) {
		if r.ProtoMajor == 1 {
			// The client needs another connection for this host; on
			// HTTP/2 the connection goes on serving the hosts it covers.
			w.Header().Set("Connection", "close")
		}
		http.Error(w, msgMisdirected, http.StatusMisdirectedRequest)
		return
	}
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
