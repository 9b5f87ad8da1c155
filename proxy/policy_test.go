package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// policyCase is one rule of policy.go, run against each front end with a
// Handler of its own.
type policyCase struct {
	name string
	opts Options
	// run sets the handler up, sends requests to addr (the front end) and
	// checks the answers; it returns the upstreams whose in-flight count
	// must be back to zero after it.
	run func(t *testing.T, h *Handler, addr string) []*Upstream
	// observed, if set, are the upstream error kinds the Observer must
	// have heard, in order.
	observed []string
}

// policyFrontEnd starts front end name ("fast path" or "net/http") serving
// h and returns its address.
func policyFrontEnd(t *testing.T, name string, h *Handler) string {
	t.Helper()
	if name == "fast path" {
		_, addr := fbServer(t, h, nil)
		return addr
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// policyObserver records what the Observer hears (fbObserver), and lists
// the upstream error kinds.
type policyObserver struct {
	fbObserver
}

// TestPolicyOnBothFrontEnds runs each rule of the forwarding policy against
// the fast path and net/http: the same request gets the same answer, the
// app sees the same, the Observer hears the same, and no request is left
// counted in flight.
func TestPolicyOnBothFrontEnds(t *testing.T) {
	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
	cases := []policyCase{{
		name: "a request that reached no app goes to the app made live meanwhile",
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			dead := mustUpstream(t, "blue", deadAddr(t))
			h.Route(dead)
			live := mustUpstream(t, "green", serve(t, ok))
			time.AfterFunc(100*time.Millisecond, func() { h.Route(live) })
			if code, body := policyGet(t, addr, "GET", "/", nil); code != 200 || body != "ok" {
				t.Errorf("got %d %q; want 200 ok from green", code, body)
			}
			return []*Upstream{dead, live}
		},
		observed: []string{"dial"}, // at least one retry
	}, {
		name: "a request that reaches no app until RetryTimeout is a 502",
		opts: Options{RetryTimeout: 300 * time.Millisecond},
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			dead := mustUpstream(t, "blue", deadAddr(t))
			h.Route(dead)
			start := time.Now()
			code, body := policyGet(t, addr, "GET", "/", nil)
			if took := time.Since(start); code != 502 || body != msgBadGateway || took < 250*time.Millisecond || took > 2*time.Second {
				t.Errorf("got %d %q after %s; want 502 %q after about 300ms", code, body, took, msgBadGateway)
			}
			return []*Upstream{dead}
		},
		observed: []string{"dial"},
	}, {
		name: "retries off: a refused dial is a 502 at once",
		opts: Options{RetryTimeout: -1},
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			dead := mustUpstream(t, "blue", deadAddr(t))
			h.Route(dead)
			start := time.Now()
			if code, _ := policyGet(t, addr, "GET", "/", nil); code != 502 || time.Since(start) > time.Second {
				t.Errorf("got %d after %s; want 502 at once", code, time.Since(start))
			}
			return []*Upstream{dead}
		},
		observed: []string{"dial"},
	}, {
		name: "after a pooled connection closed unanswered, what is replayable goes again and a POST does not",
		opts: Options{RetryTimeout: -1},
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			var answered atomic.Int32
			u := rawApp(t, func(c net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					if _, _, err := readRequest(br); err != nil || n == 1 {
						return // the second request on a connection: closed unanswered
					}
					answered.Add(1)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			h.Route(u)
			c, br := fbDial(t, addr)
			for i, req := range []string{
				fbGet("/first"),
				fbGet("/again"),
				"DELETE /x HTTP/1.1\r\nHost: test\r\nIdempotency-Key: k1\r\n\r\n",
			} {
				if resp, body := fbRoundTrip(t, c, br, req); resp.StatusCode != 200 || body != "ok" {
					t.Fatalf("request %d: %d %q; want 200 ok (replayed)", i, resp.StatusCode, body)
				}
			}
			resp, _ := fbRoundTrip(t, c, br, "POST /pay HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc")
			if resp.StatusCode != http.StatusBadGateway || answered.Load() != 3 {
				t.Errorf("POST on a dropped pooled connection: %d, app answered %d; want 502 and 3 (not sent twice)", resp.StatusCode, answered.Load())
			}
			return []*Upstream{u}
		},
		observed: []string{"reset"},
	}, {
		name: "an app slower than UpstreamTimeout is a 504",
		opts: Options{UpstreamTimeout: 200 * time.Millisecond},
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			u := mustUpstream(t, "blue", serve(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(2 * time.Second):
				case <-r.Context().Done():
				}
			}))
			h.Route(u)
			if code, body := policyGet(t, addr, "GET", "/", nil); code != 504 || body != msgGatewayTimeout {
				t.Errorf("got %d %q; want 504 %q", code, body, msgGatewayTimeout)
			}
			return []*Upstream{u}
		},
		observed: []string{"timeout"},
	}, {
		name: "nothing routed yet is a 503",
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			if code, body := policyGet(t, addr, "GET", "/", nil); code != 503 || body != msgNotRouted {
				t.Errorf("got %d %q; want 503 %q", code, body, msgNotRouted)
			}
			return nil
		},
	}, {
		name: "TRACE is refused, an underscore field dropped, the forwarding fields set",
		run: func(t *testing.T, h *Handler, addr string) []*Upstream {
			u := mustUpstream(t, "blue", serve(t, func(w http.ResponseWriter, r *http.Request) {
				for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X_Real_Ip", "X-Kept"} {
					io.WriteString(w, k+"="+strings.Join(r.Header[k], ",")+"\n")
				}
			}))
			h.Route(u)
			if code, _ := policyGet(t, addr, "TRACE", "/", nil); code != 405 {
				t.Errorf("TRACE: %d; want 405", code)
			}
			_, body := policyGet(t, addr, "GET", "/", map[string]string{
				"X-Forwarded-For": "6.6.6.6", "X_Real_IP": "6.6.6.6", "X-Kept": "yes"})
			want := "X-Forwarded-For=6.6.6.6, 127.0.0.1\nX-Forwarded-Host=policy.example\nX-Forwarded-Proto=http\n" +
				"X-Real-Ip=127.0.0.1\nX_Real_Ip=\nX-Kept=yes"
			if body != want {
				t.Errorf("the app saw\n%s\nwant\n%s", body, want)
			}
			return []*Upstream{u}
		},
	}}
	for _, tc := range cases {
		for _, fe := range []string{"fast path", "net/http"} {
			t.Run(fe+"/"+tc.name, func(t *testing.T) {
				obs := &policyObserver{}
				opts := tc.opts
				opts.Observer = obs
				h := NewHandler(opts)
				addr := policyFrontEnd(t, fe, h)
				ups := tc.run(t, h, addr)
				for _, u := range ups {
					waitInFlight(t, u, 0)
				}
				kinds := obs.kinds()
				for _, k := range tc.observed {
					if !slices.Contains(kinds, k) {
						t.Errorf("observer heard upstream errors %q; want %q among them", kinds, k)
					}
				}
			})
		}
	}
}

// TestPolicyObserverSeesTheSameOnBoth checks that both front ends tell the
// Observer the same of a request.
func TestPolicyObserverSeesTheSameOnBoth(t *testing.T) {
	var got []fbObserved
	for _, fe := range []string{"fast path", "net/http"} {
		obs := &policyObserver{}
		h := NewHandler(Options{Observer: obs})
		h.Route(mustUpstream(t, "blue", serve(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201) })))
		addr := policyFrontEnd(t, fe, h)
		if code, _ := policyGet(t, addr, "GET", "/p/q?secret=1", nil); code != 201 {
			t.Fatalf("%s: got %d; want 201", fe, code)
		}
		deadline := time.Now().Add(2 * time.Second)
		for len(obs.requests()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		r := obs.requests()
		if len(r) != 1 {
			t.Fatalf("%s: observer heard %d requests; want 1", fe, len(r))
		}
		r[0].remote = "" // two connections, two ports
		r[0].u = nil
		got = append(got, r[0])
	}
	want := fbObserved{method: "GET", path: "/p/q", host: "policy.example", proto: "HTTP/1.1", status: 201}
	for i, fe := range []string{"fast path", "net/http"} {
		if got[i] != want {
			t.Errorf("%s: observer heard %+v; want %+v", fe, got[i], want)
		}
	}
}

// policyGet sends one request with Host policy.example on a new connection
// and returns the status and body.
func policyGet(t *testing.T, addr, method, target string, header map[string]string) (int, string) {
	t.Helper()
	c, br := fbDial(t, addr)
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: policy.example\r\n")
	for k, v := range header {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	resp, body := fbRoundTrip(t, c, br, b.String())
	return resp.StatusCode, strings.TrimSpace(body)
}

func (o *policyObserver) kinds() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.errKinds)
}

// waitInFlight waits (bounded) until u counts want requests in flight: a
// front end releases a request just after its answer is out.
func waitInFlight(t *testing.T, u *Upstream, want int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for u.InFlight() != want {
		if time.Now().After(deadline) {
			t.Errorf("%s has %d request(s) in flight; want %d", u.Name(), u.InFlight(), want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustUpstream(t *testing.T, name, addr string) *Upstream {
	t.Helper()
	u, err := NewUpstream(name, addr)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// serve starts an app serving f and returns its address.
func serve(t *testing.T, f http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// After a retry on another upstream, both front ends tell the Observer of
// the upstream that answered, not of the one that refused.
func TestPolicyObserverNamesTheUpstreamThatAnswered(t *testing.T) {
	for _, fe := range []string{"fast path", "net/http"} {
		obs := &policyObserver{}
		h := NewHandler(Options{Observer: obs})
		dead := mustUpstream(t, "blue", deadAddr(t))
		live := mustUpstream(t, "green", serve(t, func(w http.ResponseWriter, r *http.Request) {}))
		h.Route(dead)
		time.AfterFunc(50*time.Millisecond, func() { h.Route(live) })
		if code, _ := policyGet(t, policyFrontEnd(t, fe, h), "GET", "/", nil); code != 200 {
			t.Fatalf("%s: got %d; want 200 from green", fe, code)
		}
		deadline := time.Now().Add(2 * time.Second)
		for len(obs.requests()) == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if r := obs.requests(); len(r) != 1 || r[0].u != live {
			t.Errorf("%s: observer heard %+v; want one request served by green", fe, r)
		}
	}
}
