package proxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// DefaultStickyCookie is the cookie a Split with SplitConfig.Cookie set
// gives each client without one. Its value is a random token that places the
// client in a bucket; it means nothing to the app.
const DefaultStickyCookie = "baton_canary"

// stickyCookieMaxAge is how long a client keeps its sticky token: long
// enough for one rollout, whatever the schedule.
const stickyCookieMaxAge = 30 * 24 * 60 * 60

// SplitConfig describes a Split. Canary is required; the zero value of every
// other field has the meaning given on it.
type SplitConfig struct {
	// Canary is the upstream that takes the share; the live upstream
	// (Handler.Route) takes the rest.
	Canary *Upstream
	// Percent is the share of requests (0-100), allow-listed ones aside,
	// that go to Canary.
	Percent int
	// Seed salts the bucket of a sticky request, so that each rollout picks
	// its own users rather than the same unlucky tenth every time. Keep it
	// the same across the steps of one rollout: a client then only ever
	// moves from the live upstream to the canary as Percent grows.
	Seed string

	// At most one of Cookie, Header and AppCookie may be set. None means
	// no stickiness: every request is placed at random.
	//
	// Cookie names a cookie that baton sets on the response to every
	// client that lacks it (DefaultStickyCookie is the usual name); its
	// token places the client in a bucket 0-99. Header and AppCookie name
	// a request header or a cookie the app already uses (a user ID, a
	// session) whose value is hashed into the bucket; a request without it
	// is placed at random.
	Cookie    string
	Header    string
	AppCookie string

	// A request that has header AllowHeader with value AllowHeaderValue,
	// or cookie AllowCookie with value AllowCookieValue, always goes to
	// Canary, whatever Percent. Empty names mean no allow-list.
	AllowHeader, AllowHeaderValue string
	AllowCookie, AllowCookieValue string
}

// Split sends a share of requests to a canary upstream while the live
// upstream takes the rest. It is immutable: change the share by giving the
// Handler a new Split (WithPercent), the same way Route swaps upstreams. A
// Split is safe for concurrent use.
type Split struct {
	canary  *Upstream
	percent int
	seed    uint64

	cookie, header, appCookie string

	allowHeader, allowHeaderValue string
	allowCookie, allowCookieValue string
}

// NewSplit validates cfg and returns its Split.
func NewSplit(cfg SplitConfig) (*Split, error) {
	var errs []error
	if cfg.Canary == nil {
		errs = append(errs, errors.New("no canary upstream"))
	}
	if cfg.Percent < 0 || cfg.Percent > 100 {
		errs = append(errs, fmt.Errorf("percent %d: want 0-100", cfg.Percent))
	}
	n := 0
	for _, v := range []string{cfg.Cookie, cfg.Header, cfg.AppCookie} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("more than one kind of stickiness: pick a baton cookie, a header or an app cookie"))
	}
	for _, c := range []struct{ what, name string }{{"sticky cookie", cfg.Cookie}, {"app cookie", cfg.AppCookie}, {"allow-list cookie", cfg.AllowCookie}} {
		if c.name != "" && !validCookieName(c.name) {
			errs = append(errs, fmt.Errorf("%s name %q: want letters, digits and !#$%%&'*+-.^_`|~", c.what, c.name))
		}
	}
	for _, h := range []struct{ what, name string }{{"sticky header", cfg.Header}, {"allow-list header", cfg.AllowHeader}} {
		if h.name != "" && !validCookieName(h.name) { // header names are tokens too
			errs = append(errs, fmt.Errorf("%s name %q: want a header name", h.what, h.name))
		}
	}
	if (cfg.AllowHeader == "") != (cfg.AllowHeaderValue == "") {
		errs = append(errs, errors.New("allow-list header needs both a name and a value"))
	}
	if (cfg.AllowCookie == "") != (cfg.AllowCookieValue == "") {
		errs = append(errs, errors.New("allow-list cookie needs both a name and a value"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("split: %w", err)
	}
	return &Split{
		canary:           cfg.Canary,
		percent:          cfg.Percent,
		seed:             hashString(fnvOffset, cfg.Seed),
		cookie:           cfg.Cookie,
		header:           canonicalHeader(cfg.Header),
		appCookie:        cfg.AppCookie,
		allowHeader:      canonicalHeader(cfg.AllowHeader),
		allowHeaderValue: cfg.AllowHeaderValue,
		allowCookie:      cfg.AllowCookie,
		allowCookieValue: cfg.AllowCookieValue,
	}, nil
}

// WithPercent returns a copy of s with the canary's share set to p (clamped
// to 0-100), keeping the seed, so that sticky clients keep their buckets.
func (s *Split) WithPercent(p int) *Split {
	c := *s
	c.percent = min(max(p, 0), 100)
	return &c
}

// Canary returns the upstream that takes the share.
func (s *Split) Canary() *Upstream { return s.canary }

// Percent returns the share of requests that go to the canary.
func (s *Split) Percent() int { return s.percent }

// SetSplit makes s the active split and returns the previous one; nil ends
// the split, sending every request to the live upstream again. As with
// Route, requests that already picked the canary finish on it: after ending
// a split, wait for the canary's InFlight to reach zero before stopping its
// app. The live upstream stays whatever Route made it, so promoting the
// canary is Route(canary) followed by SetSplit(nil), and nothing reaches the
// old upstream in between.
func (h *Handler) SetSplit(s *Split) (previous *Split) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s != nil {
		u := s.canary
		u.init.Do(func() { u.proxy = h.newReverseProxy(u) })
	}
	return h.split.Swap(s)
}

// ActiveSplit returns the active split, nil if none.
func (h *Handler) ActiveSplit() *Split { return h.split.Load() }

// acquireSplit is acquire for a request that arrived while a split was
// active: it picks the live upstream or the split's canary for r, counts r
// in flight there, and then re-checks both pointers. If either moved between
// the loads and the increment, a drain that already saw zero in flight on
// the upstream we picked could stop its app under us, so it picks again. It
// returns nil if nothing is routed. A sticky cookie for a new client is set
// on w only once the pick is final.
func (h *Handler) acquireSplit(s *Split, w http.ResponseWriter, r *http.Request) *Upstream {
	var (
		picked *Split // the split toCanary was decided for
		canary bool
		token  string // a new sticky token to hand out, if any
	)
	for {
		live := h.live.Load()
		if live == nil {
			return nil
		}
		u := live
		if s != nil {
			if s != picked {
				canary, token = s.pick(r)
				picked = s
			}
			if canary {
				u = s.canary
			}
		}
		u.inFlight.Add(1)
		if h.live.Load() == live && h.split.Load() == s {
			if token != "" && s != nil {
				w.Header().Add("Set-Cookie", s.setCookie(token, r))
			}
			return u
		}
		u.inFlight.Add(-1)
		s = h.split.Load()
	}
}

// pick decides whether r goes to the canary. token is a sticky token newly
// made for a client that had none, to be set as a cookie; "" if none.
func (s *Split) pick(r *http.Request) (canary bool, token string) {
	if s.allowHeader != "" && hasHeaderValue(r.Header, s.allowHeader, s.allowHeaderValue) {
		return true, ""
	}
	if s.allowCookie != "" {
		if v, ok := cookieValue(r.Header, s.allowCookie); ok && v == s.allowCookieValue {
			return true, ""
		}
	}
	var key string
	switch {
	case s.cookie != "":
		v, ok := cookieValue(r.Header, s.cookie)
		if !ok || !validToken(v) {
			v = newToken()
			token = v
		}
		key = v
	case s.header != "":
		if vs := r.Header[s.header]; len(vs) > 0 {
			key = vs[0]
		}
	case s.appCookie != "":
		key, _ = cookieValue(r.Header, s.appCookie)
	}
	switch {
	case s.percent <= 0:
		return false, token
	case s.percent >= 100:
		return true, token
	case key == "":
		return rand.IntN(100) < s.percent, token
	}
	return s.Bucket(key) < s.percent, token
}

// Bucket returns the bucket (0-99) of a sticky key under s's seed. A key
// goes to the canary when its bucket is below the percentage.
func (s *Split) Bucket(key string) int {
	return int(mix(hashString(s.seed, key)) % 100)
}

func (s *Split) setCookie(token string, r *http.Request) string {
	c := s.cookie + "=" + token + "; Path=/; Max-Age=" + strconv.Itoa(stickyCookieMaxAge) + "; HttpOnly; SameSite=Lax"
	if r.TLS != nil {
		c += "; Secure"
	}
	return c
}

// newToken returns a random sticky token: 16 hex digits.
func newToken() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}

// validToken accepts what a client may send back as a sticky token: 1-64
// characters of a cookie value that needs no quoting.
func validToken(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// cookieValue returns the value of the first cookie called name in h's
// Cookie headers, without allocating (net/http's Request.Cookie parses
// every cookie into a slice).
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = strings.TrimSpace(part)
			k, v, ok := strings.Cut(part, "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}

func hasHeaderValue(h http.Header, name, value string) bool {
	for _, v := range h[name] {
		if strings.TrimSpace(v) == value {
			return true
		}
	}
	return false
}

func canonicalHeader(name string) string {
	if name == "" {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// validCookieName reports whether name is an RFC 7230 token, which both
// cookie and header names must be.
func validCookieName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return name != ""
}

// FNV-1a, 64 bit: cheap, allocation-free, and good enough to spread user
// IDs over 100 buckets once mixed.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix is splitmix64's finaliser: FNV's low bits alone are poorly spread
// for short keys that differ in their last byte.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
