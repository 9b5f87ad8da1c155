package main

import (
	"sync/atomic"
	"time"

	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/switcher"
)

// trafficCounts counts, per colour, the requests answered and how many of
// them were 5xx since the colour last became live, for 'baton status': an
// app that passes its health checks but fails real requests shows there
// (and in baton_http_requests_total{code="5xx"}). It is a proxy.Observer
// that passes every call on to next. It is safe for concurrent use.
type trafficCounts struct {
	next proxy.Observer
	ups  [2]*proxy.Upstream // set by serve before serving
	c    [2]colorCounts
}

type colorCounts struct {
	since     atomic.Int64 // unix nanoseconds
	requests  atomic.Uint64
	status5xx atomic.Uint64
}

func newTrafficCounts(next proxy.Observer) *trafficCounts {
	t := &trafficCounts{next: next}
	now := time.Now().UnixNano()
	for i := range t.c {
		t.c[i].since.Store(now)
	}
	return t
}

func (t *trafficCounts) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	for i, up := range t.ups {
		if up == u {
			t.c[i].requests.Add(1)
			if status >= 500 {
				t.c[i].status5xx.Add(1)
			}
			break
		}
	}
	if t.next != nil {
		t.next.RequestDone(u, r, status, d)
	}
}

func (t *trafficCounts) UpstreamError(u *proxy.Upstream, kind string, retried bool) {
	if t.next != nil {
		t.next.UpstreamError(u, kind, retried)
	}
}

// reset starts c's count afresh: c has just become live.
func (t *trafficCounts) reset(c switcher.Color) {
	t.c[c].since.Store(time.Now().UnixNano())
	t.c[c].requests.Store(0)
	t.c[c].status5xx.Store(0)
}

func (t *trafficCounts) traffic(c switcher.Color) switcher.Traffic {
	return switcher.Traffic{
		Since:     time.Unix(0, t.c[c].since.Load()).UTC(),
		Requests:  t.c[c].requests.Load(),
		Status5xx: t.c[c].status5xx.Load(),
	}
}
