package proxy

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// splitFixture is a Handler with blue live and green as the canary, both
// real httptest apps.
type splitFixture struct {
	h           *Handler
	fe          *httptest.Server
	blue, green *Upstream
}

func newSplitFixture(t *testing.T) *splitFixture {
	t.Helper()
	_, blue := app(t, "blue")
	_, green := app(t, "green")
	h := NewHandler(Options{})
	h.Route(blue)
	return &splitFixture{h: h, fe: frontend(t, h), blue: blue, green: green}
}

func (f *splitFixture) split(t *testing.T, cfg SplitConfig) *Split {
	t.Helper()
	cfg.Canary = f.green
	s, err := NewSplit(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.h.SetSplit(s)
	return s
}

// serve sends one request through the handler in-process and returns who
// answered and the response.
func (f *splitFixture) serve(t *testing.T, hdr map[string]string) (string, *http.Response) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	resp := rec.Result()
	return rec.Body.String(), resp
}

// within reports whether got canary answers out of n are within 5 standard
// deviations of percent: loose enough never to flake, tight enough to catch
// a split that is off by a few points.
func within(got, n, percent int) bool {
	p := float64(percent) / 100
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return math.Abs(float64(got)-float64(n)*p) <= 5*sd+1
}

func TestSplitHoldsTheShare(t *testing.T) {
	f := newSplitFixture(t)
	for _, pct := range []int{0, 10, 50, 100} {
		f.split(t, SplitConfig{Percent: pct})
		n, green := 2000, 0
		for range n {
			if who, _ := f.serve(t, nil); who == "green" {
				green++
			}
		}
		if !within(green, n, pct) {
			t.Errorf("%d%% split: green answered %d of %d", pct, green, n)
		}
	}
	f.h.SetSplit(nil)
	for range 50 {
		if who, _ := f.serve(t, nil); who != "blue" {
			t.Fatalf("after SetSplit(nil) %s answered; want blue", who)
		}
	}
	if f.blue.InFlight() != 0 || f.green.InFlight() != 0 {
		t.Errorf("in flight after all done: blue=%d green=%d", f.blue.InFlight(), f.green.InFlight())
	}
}

func TestSplitStickyCookie(t *testing.T) {
	f := newSplitFixture(t)
	s := f.split(t, SplitConfig{Percent: 30, Seed: "rollout-1", Cookie: DefaultStickyCookie})

	// A client without the cookie gets one, and then always the same
	// colour; across many clients the share holds.
	clients, green := 400, 0
	onGreen := map[string]bool{}
	for i := range clients {
		who, resp := f.serve(t, nil)
		var token string
		for _, c := range resp.Cookies() {
			if c.Name == DefaultStickyCookie {
				token = c.Value
				if c.MaxAge <= 0 || !c.HttpOnly || c.Path != "/" {
					t.Fatalf("sticky cookie %+v: want a long-lived HttpOnly cookie for /", c)
				}
			}
		}
		if token == "" {
			t.Fatalf("client %d: no %s cookie set; headers %v", i, DefaultStickyCookie, resp.Header)
		}
		for range 5 {
			again, resp := f.serve(t, map[string]string{"Cookie": "other=1; " + DefaultStickyCookie + "=" + token})
			if again != who {
				t.Fatalf("client with token %s got %s, then %s", token, who, again)
			}
			if len(resp.Header["Set-Cookie"]) != 0 {
				t.Fatalf("a client with a token was given another: %v", resp.Header["Set-Cookie"])
			}
		}
		onGreen[token] = who == "green"
		if who == "green" {
			green++
		}
	}
	if !within(green, clients, 30) {
		t.Errorf("30%% sticky split: %d of %d clients on green", green, clients)
	}

	// Raising the share only moves clients to the canary.
	f.h.SetSplit(s.WithPercent(60))
	moved := 0
	for token, wasGreen := range onGreen {
		who, _ := f.serve(t, map[string]string{"Cookie": DefaultStickyCookie + "=" + token})
		if wasGreen && who != "green" {
			t.Fatalf("client %s was on green at 30%% and on %s at 60%%", token, who)
		}
		if !wasGreen && who == "green" {
			moved++
		}
	}
	if moved == 0 {
		t.Error("raising the share to 60% moved no client to green")
	}
}

func TestSplitStickyHeaderAndAppCookie(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SplitConfig
		hdr  func(id string) map[string]string
	}{
		{"header", SplitConfig{Header: "x-user-id"}, func(id string) map[string]string { return map[string]string{"X-User-Id": id} }},
		{"app cookie", SplitConfig{AppCookie: "SESSION"}, func(id string) map[string]string { return map[string]string{"Cookie": "a=b; SESSION=" + id} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSplitFixture(t)
			cfg := tc.cfg
			cfg.Percent, cfg.Seed = 25, "seed"
			f.split(t, cfg)
			users, green := 400, 0
			for i := range users {
				id := "user-" + strconv.Itoa(i)
				first, resp := f.serve(t, tc.hdr(id))
				if len(resp.Header["Set-Cookie"]) != 0 {
					t.Fatalf("baton set a cookie without cookie stickiness: %v", resp.Header["Set-Cookie"])
				}
				for range 4 {
					if again, _ := f.serve(t, tc.hdr(id)); again != first {
						t.Fatalf("user %s went to %s, then %s", id, first, again)
					}
				}
				if first == "green" {
					green++
				}
			}
			if !within(green, users, 25) {
				t.Errorf("25%% split by %s: %d of %d users on green", tc.name, green, users)
			}
			// Without the key a request is placed at random.
			n, g := 1000, 0
			for range n {
				if who, _ := f.serve(t, nil); who == "green" {
					g++
				}
			}
			if !within(g, n, 25) {
				t.Errorf("requests without the key: %d of %d on green", g, n)
			}
		})
	}
}

func TestSplitSeedPicksOtherUsers(t *testing.T) {
	a, _ := NewSplit(SplitConfig{Canary: &Upstream{}, Percent: 10, Seed: "one"})
	b, _ := NewSplit(SplitConfig{Canary: &Upstream{}, Percent: 10, Seed: "two"})
	same := 0
	for i := range 1000 {
		k := "user-" + strconv.Itoa(i)
		if a.Bucket(k) == b.Bucket(k) {
			same++
		}
	}
	if same > 50 {
		t.Errorf("%d of 1000 keys in the same bucket under two seeds; want about 10", same)
	}
}

func TestSplitAllowList(t *testing.T) {
	f := newSplitFixture(t)
	f.split(t, SplitConfig{Percent: 0, AllowHeader: "X-Canary", AllowHeaderValue: "1", AllowCookie: "tester", AllowCookieValue: "yes"})
	for _, tc := range []struct {
		hdr  map[string]string
		want string
	}{
		{nil, "blue"},
		{map[string]string{"X-Canary": "1"}, "green"},
		{map[string]string{"x-canary": "1"}, "green"},
		{map[string]string{"X-Canary": "0"}, "blue"},
		{map[string]string{"Cookie": "tester=yes"}, "green"},
		{map[string]string{"Cookie": "a=1; tester=\"yes\""}, "green"},
		{map[string]string{"Cookie": "tester=no"}, "blue"},
		{map[string]string{"Cookie": "xtester=yes"}, "blue"},
	} {
		for range 20 {
			if who, _ := f.serve(t, tc.hdr); who != tc.want {
				t.Fatalf("headers %v: %s answered; want %s", tc.hdr, who, tc.want)
			}
		}
	}
}

func TestNewSplitRejectsBadConfig(t *testing.T) {
	u := &Upstream{}
	for _, cfg := range []SplitConfig{
		{Percent: 10},
		{Canary: u, Percent: 101},
		{Canary: u, Percent: -1},
		{Canary: u, Cookie: "a", Header: "b"},
		{Canary: u, Cookie: "bad name"},
		{Canary: u, AllowHeader: "X-Canary"},
		{Canary: u, AllowCookieValue: "1"},
	} {
		if _, err := NewSplit(cfg); err == nil {
			t.Errorf("NewSplit(%+v) = nil error", cfg)
		}
	}
}

// TestSplitChangesUnderLoadKeepCountsBalanced changes the share, ends and
// restarts the split and swaps the live upstream while requests flow: no
// request fails, every request is counted out where it was counted in, and
// once the split ends and the canary has drained, nothing reaches it.
func TestSplitChangesUnderLoadKeepCountsBalanced(t *testing.T) {
	f := newSplitFixture(t)
	s := f.split(t, SplitConfig{Percent: 50, Cookie: DefaultStickyCookie})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 4 {
			case 0:
				f.h.SetSplit(s.WithPercent(i % 101))
			case 1:
				f.h.SetSplit(nil)
			case 2:
				f.h.SetSplit(s)
			case 3:
				f.h.Route(f.blue)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var failures atomic.Int64
	var clients sync.WaitGroup
	for range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for range 100 {
				resp, err := http.Get(f.fe.URL)
				if err != nil || resp.StatusCode != 200 {
					failures.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed while the split changed", n)
	}
	if f.blue.InFlight() != 0 || f.green.InFlight() != 0 {
		t.Errorf("in flight after all done: blue=%d green=%d; want 0", f.blue.InFlight(), f.green.InFlight())
	}
	if got := f.blue.Served() + f.green.Served(); got != 400 {
		t.Errorf("served %d; want 400", got)
	}

	// End the split: after the canary drained, no request reaches it.
	f.h.SetSplit(nil)
	waitFor(t, func() bool { return f.green.InFlight() == 0 })
	before := f.green.Served()
	for range 50 {
		if who, _ := f.serve(t, nil); who != "blue" {
			t.Fatalf("after the split ended %s answered", who)
		}
	}
	if f.green.Served() != before {
		t.Errorf("green served %d requests after the split ended", f.green.Served()-before)
	}
}

// TestSplitDrainIsSafe is the promote and abort sequence with slow requests
// in flight: a drain that waits for the old upstream's count to reach zero
// must not end while a request is still on it.
func TestSplitDrainIsSafe(t *testing.T) {
	f := newSplitFixture(t)
	f.split(t, SplitConfig{Percent: 50})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(f.fe.URL + "/slow?d=150ms")
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	waitFor(t, func() bool { return f.blue.InFlight()+f.green.InFlight() == 20 })
	if f.blue.InFlight() == 0 || f.green.InFlight() == 0 {
		t.Fatalf("a 50%% split put blue=%d green=%d in flight", f.blue.InFlight(), f.green.InFlight())
	}
	// Promote: route to the canary, then end the split; blue drains.
	f.h.Route(f.green)
	f.h.SetSplit(nil)
	if err := f.blue.WaitIdle(t.Context(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d slow requests failed", failed.Load())
	}
	if who, _ := f.serve(t, nil); who != "green" {
		t.Errorf("after the promote %s answered; want green", who)
	}
}

func TestCookieValue(t *testing.T) {
	h := http.Header{"Cookie": {"a=1; b=two", "c=\"3\";d=", "e"}}
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{{"a", "1", true}, {"b", "two", true}, {"c", "3", true}, {"d", "", true}, {"e", "", false}, {"z", "", false}} {
		if got, ok := cookieValue(h, tc.name); got != tc.want || ok != tc.ok {
			t.Errorf("cookieValue(%q) = %q, %t; want %q, %t", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// The split must not cost the request path anything while it is off, and
// little while it is on.
func TestSplitPickAllocs(t *testing.T) {
	s, _ := NewSplit(SplitConfig{Canary: &Upstream{}, Percent: 30, AppCookie: "SESSION", AllowHeader: "X-Canary", AllowHeaderValue: "1"})
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Cookie", "SESSION=abc; theme=dark")
	if n := testing.AllocsPerRun(100, func() { s.pick(req) }); n != 0 {
		t.Errorf("pick allocates %v times per request; want 0", n)
	}
}
