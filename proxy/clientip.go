package proxy

import (
	"net"
	"net/http/httputil"
	"net/netip"
	"strings"
)

// trustedProxies is the set of networks whose forwarding headers are
// believed. Empty trusts nobody.
type trustedProxies []netip.Prefix

// trustedPeer returns the socket peer host (an IP address, as in
// RemoteAddr) in canonical form if it is a trusted proxy, whose forwarding
// fields are then believed; "" if it is not. Both front ends ask it.
func (t trustedProxies) trustedPeer(host string) string {
	if len(t) == 0 {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !t.contains(a.Unmap()) {
		return ""
	}
	return a.Unmap().String()
}

func (t trustedProxies) contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientIP returns the address to send as X-Real-IP: the socket peer, or, if
// the peer is a trusted proxy, the client it forwarded for. It is called by
// Rewrite after SetXForwarded, and for a trusted peer also restores the
// X-Forwarded-Proto and X-Forwarded-Host it sent (SetXForwarded replaced
// them with baton's own view), so that an app behind a TLS-terminating load
// balancer still learns the request was HTTPS.
func (h *Handler) clientIP(pr *httputil.ProxyRequest) string {
	host, _, err := net.SplitHostPort(pr.In.RemoteAddr)
	if err != nil {
		return ""
	}
	peer := h.trusted.trustedPeer(host)
	if peer == "" {
		return host
	}
	for _, k := range [...]string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
		if v := pr.In.Header.Get(k); v != "" {
			pr.Out.Header.Set(k, v)
		}
	}
	return forwardedClient(pr.In.Header["X-Forwarded-For"], h.trusted, peer)
}

// forwardedClient walks X-Forwarded-For from the right (the entry the
// nearest proxy added) past trusted proxies and returns the first address
// that is not one: the client as far as any trusted party can tell. Entries
// further left were written by the client itself and prove nothing. If every
// entry is trusted, the leftmost is returned; if an entry does not parse, the
// walk stops at the last good one (peer if there is none), as nginx's
// real_ip_recursive does.
func forwardedClient(xff []string, trusted trustedProxies, peer string) string {
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		rest := xff[i]
		for rest != "" {
			j := strings.LastIndexByte(rest, ',')
			entry := strings.TrimSpace(rest[j+1:])
			rest = rest[:max(j, 0)]
			if entry == "" {
				continue
			}
			a, err := parseForwardedAddr(entry)
			if err != nil {
				return client
			}
			client = a.String()
			if !trusted.contains(a) {
				return client
			}
		}
	}
	return client
}

// parseForwardedAddr parses an X-Forwarded-For entry: an address, or an
// address with a port as some load balancers write it.
func parseForwardedAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			return netip.Addr{}, err
		}
		a = ap.Addr()
	}
	return a.Unmap(), nil
}
