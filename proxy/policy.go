package proxy

import (
	"errors"
	"net/http"
	"time"
)

// The forwarding policy: what baton decides about a request, written once
// and called by both front ends (FastServer's HTTP/1.1 loop in fast.go and
// the net/http Handler in handler.go), which only parse requests and move
// bytes. TestPolicyOnBothFrontEnds runs each rule against both.
//
//   - Handler.refuse: requests baton answers itself (TRACE).
//   - dropsRequestField: request header fields that never reach the app
//     (names with "_"), beside the hop-by-hop fields both drop.
//   - trustedProxies.trustedPeer and forwardedClient (clientip.go):
//     whose X-Forwarded-* fields are believed, and the client X-Real-IP
//     names; both codecs then write X-Forwarded-For, -Host, -Proto and
//     X-Real-IP from them.
//   - Handler.acquire / acquireSplit: which upstream serves the request
//     (live, or the canary's share) and the in-flight count a drain waits
//     for.
//   - dialRetry: a request that reached no app (its dial failed) is
//     retried on whatever upstream is live, until RetryTimeout after the
//     first failure.
//   - replayable: which requests may be sent again after a pooled
//     connection closed under them without a byte of answer.
//   - Handler.failure: what a failed exchange answers (502, or 504 for a
//     timeout, or nothing when the client is gone), logs and counts.
//   - Observer.RequestDone hears of the upstream that answered (after a
//     retry, not the one that refused) with the same RequestInfo fields.
//   - Handler.respTimeout (Options.UpstreamTimeout) bounds the wait for the
//     answer's head on both; upstreamTimeoutError names it as the cause.

// Retry schedule of dialRetry: the first wait, and the longest.
const (
	retryFirstWait = 5 * time.Millisecond
	retryMaxWait   = 200 * time.Millisecond
)

// dialRetry is the rule for a request none of whose bytes reached an app
// because the dial failed: that is safe to send again whatever the method,
// so it is retried, on another upstream at once if one is live by then (a
// switch happened), else on the same one after a wait that doubles, until
// the handler's RetryTimeout counted from the first failed dial. The zero
// value with h set is ready; one per request.
type dialRetry struct {
	h        *Handler
	deadline time.Time // zero until the first failure
	wait     time.Duration
}

// next is told that a dial to u failed with err and returns the upstream
// to try now and true, or false if the request fails with err: retries are
// off, err is not a dial error, the deadline has passed, or clientGone (nil:
// never) was closed while waiting. A returned upstream other than u has one
// request more counted in flight; the caller stops counting on u.
func (r *dialRetry) next(u *Upstream, err error, clientGone <-chan struct{}) (*Upstream, bool) {
	h := r.h
	if h.retryTimeout < 0 || !isDialError(err) {
		return nil, false
	}
	if r.deadline.IsZero() {
		r.deadline = time.Now().Add(h.retryTimeout)
		r.wait = retryFirstWait
	}
	next := h.liveOtherThan(u)
	if next == nil {
		// Nothing else to try yet: the live app is restarting, or a swap
		// is about to happen. Wait a little and try again.
		left := time.Until(r.deadline)
		if left <= 0 {
			return nil, false
		}
		// The last wait ends at the deadline, for a last try there: the
		// request is retried for all of RetryTimeout.
		t := time.NewTimer(min(r.wait, left))
		select {
		case <-clientGone:
			t.Stop()
			return nil, false
		case <-t.C:
		}
		r.wait = min(r.wait*2, retryMaxWait)
		if next = h.liveOtherThan(u); next == nil {
			next = u
		}
	}
	if h.observer != nil {
		h.observer.UpstreamError(u, "dial", true)
	}
	if next != u {
		h.logger.Debug("retrying request that reached no app", "from", u.name, "to", next.name, "err", err)
	}
	return next, true
}

// liveOtherThan returns the live upstream, counted in flight, if it is not
// u; nil if it is u or nothing is routed.
func (h *Handler) liveOtherThan(u *Upstream) *Upstream {
	live := h.acquire()
	if live == u && live != nil {
		live.inFlight.Add(-1)
		return nil
	}
	return live
}

// replayable reports whether a request may be sent again on a new
// connection after the pooled connection it went out on closed without a
// byte of answer (the app's idle timeout met it on the way): it most likely
// never reached a handler. True for an idempotent method without a body, or
// a request marked with an idempotency key; http.Transport's rule.
func replayable(method string, hasBody, hasIdempotencyKey bool) bool {
	if hasBody {
		return false
	}
	return method == "" || idempotentMethod(method) || hasIdempotencyKey
}

// idempotencyKeys are the request fields that mark a request as safe to
// replay (replayable).
// idempotencyKeysLower are the same in lower case, for the fast path's
// byte comparisons.
var (
	idempotencyKeys      = [...]string{"Idempotency-Key", "X-Idempotency-Key"}
	idempotencyKeysLower = [...]string{"idempotency-key", "x-idempotency-key"}
)

// idempotentMethod reports whether a request with method m may be sent
// twice when it has no body.
func idempotentMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// failure decides the answer to a request whose exchange with u failed with
// err: it counts the failure (Observer.UpstreamError) and logs it, and
// returns the status and body to answer with: 504 for a timeout, 413 for a
// body the limit cut, else 502. It returns 0 when nobody is left to answer:
// the client went away (clientGone) or stopped sending its request body;
// the front end then closes the connection without an answer.
func (h *Handler) failure(u *Upstream, err error, info RequestInfo, clientGone bool) (int, string) {
	if errors.As(err, new(bodyError)) {
		if errors.As(err, new(*http.MaxBytesError)) {
			// The body limit cut a body of unknown length (bodylimit.go).
			return http.StatusRequestEntityTooLarge, h.tooLarge
		}
		h.logger.Debug("client stopped sending its request body", "path", info.Path, "err", err)
		return 0, ""
	}
	kind := errorKind(err)
	if h.observer != nil {
		h.observer.UpstreamError(u, kind, false)
	}
	if kind == "canceled" && clientGone {
		h.logger.Debug("client canceled request", "upstream", u.name, "path", info.Path)
		return 0, ""
	}
	h.logger.Warn("upstream request failed", "upstream", u.name, "addr", u.addr,
		"method", info.Method, "path", info.Path, "kind", kind, "err", err)
	if kind == "timeout" {
		return http.StatusGatewayTimeout, msgGatewayTimeout
	}
	return http.StatusBadGateway, msgBadGateway
}

// The bodies of the proxy's own error answers, on both front ends.
const (
	msgBadGateway     = "502 Bad Gateway: the app is not answering"
	msgGatewayTimeout = "504 Gateway Timeout: the app did not answer in time"
	msgNotRouted      = "503 Service Unavailable: no app is routed yet"
)
