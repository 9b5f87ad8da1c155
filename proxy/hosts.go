package proxy

import "strings"

// HostMap maps host names and one-label wildcards to values, and looks a
// host up the way routes match hosts: without the port or a trailing dot,
// case-insensitively, the exact name before the wildcard of its parent
// ("*.example.com" matches a.example.com, not example.com nor
// a.b.example.com). The routing table keeps its hosts in one, and so does
// the choice of a TLS certificate by SNI name and the check that a
// certificate covers a request's Host: one matching rule for all three.
//
// Add builds it; once built it is read-only and safe for concurrent
// Lookup. The zero value is empty.
type HostMap[V any] struct {
	exact    map[string]V // lower-case name
	wildcard map[string]V // "example.com" for "*.example.com"
}

// Add maps pattern, a host name or "*." and a name, to v, and reports
// whether it did: a pattern mapped already keeps its first value. Pattern
// is lower-cased; it is not otherwise checked (see NewRouteTable for the
// names a route accepts), so a pattern no host can match is harmless.
func (m *HostMap[V]) Add(pattern string, v V) bool {
	target, key := m.slot(pattern)
	if _, dup := (*target)[key]; dup {
		return false
	}
	(*target)[key] = v
	return true
}

// Get returns the value mapped to exactly pattern ("*.example.com" is the
// wildcard, not a host under it).
func (m *HostMap[V]) Get(pattern string) (V, bool) {
	target, key := m.slot(pattern)
	v, ok := (*target)[key]
	return v, ok
}

func (m *HostMap[V]) slot(pattern string) (*map[string]V, string) {
	if m.exact == nil {
		m.exact, m.wildcard = map[string]V{}, map[string]V{}
	}
	name := strings.ToLower(strings.TrimSuffix(pattern, "."))
	if rest, wild := strings.CutPrefix(name, "*."); wild {
		return &m.wildcard, rest
	}
	return &m.exact, name
}

// Len returns how many patterns are mapped.
func (m *HostMap[V]) Len() int { return len(m.exact) + len(m.wildcard) }

// Lookup returns the value of the pattern host (a Host header or an SNI
// name: any case, maybe with a port) matches. It does not allocate.
func (m *HostMap[V]) Lookup(host string) (V, bool) {
	var found V
	ok := lookupHost(m, host, func(v V) bool { found = v; return true })
	return found, ok
}

// Contains reports whether host matches a pattern of m.
func (m *HostMap[V]) Contains(host string) bool {
	_, ok := m.Lookup(host)
	return ok
}

// maxHostLen bounds the host names a lookup folds to lower case on the
// stack; a longer one matches no name (DNS names are at most 253).
const maxHostLen = 255

// lookupHost offers accept the value of host's exact name, then that of
// its parent's wildcard, and reports whether accept took one. A route
// table's accept looks for a matching path prefix, so that a host whose
// prefixes all miss falls through to the wildcard. It does not allocate.
func lookupHost[V any, S ~string | ~[]byte](m *HostMap[V], host S, accept func(V) bool) bool {
	host = hostWithoutPort(host)
	if len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	if len(host) > maxHostLen || (len(m.exact) == 0 && len(m.wildcard) == 0) {
		return false
	}
	var buf [maxHostLen]byte
	n := copy(buf[:], host)
	lower := buf[:n]
	for i, b := range lower {
		if 'A' <= b && b <= 'Z' {
			lower[i] = b + ('a' - 'A')
		}
	}
	if v, ok := m.exact[string(lower)]; ok && accept(v) {
		return true
	}
	if i := indexByte(lower, '.'); i > 0 {
		if v, ok := m.wildcard[string(lower[i+1:])]; ok && accept(v) {
			return true
		}
	}
	return false
}

// hostWithoutPort drops a port from a Host header: "a.example:8443" and
// "[::1]:80" give "a.example" and "[::1]".
func hostWithoutPort[S ~string | ~[]byte](host S) S {
	if len(host) > 0 && host[0] == '[' {
		for i := 0; i < len(host); i++ {
			if host[i] == ']' {
				return host[:i+1]
			}
		}
		return host
	}
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			return host[:i]
		}
	}
	return host
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
