package loadgen

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPathsAndVersionSources runs every request kind against an app with
// its own paths and its version in a custom header or in the body.
func TestPathsAndVersionSources(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Query().Has("ms") {
			time.Sleep(5 * time.Millisecond)
		}
		if r.Method == http.MethodGet && r.URL.Path == "/app/slow" {
			w.Header().Set("X-Build", "b7")
		}
		fmt.Fprintln(w, "b7 hello") // no echo count: SkipEchoCheck
	})
	for _, tc := range []struct {
		name     string
		header   string
		fromBody bool
		want     string
	}{
		{"custom header, body fallback", "X-Build", true, "b7"},
		{"missing header, no fallback", "X-Nope", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(paths)
			target := newServer(t, h, nil)
			rep := runFor(t, Config{
				Target: target, Rate: 200, KeepAliveConns: 2,
				NewConnFraction: 0.2, SlowFraction: 0.2, SlowMin: time.Millisecond, SlowMax: 2 * time.Millisecond, PostFraction: 0.2,
				Path: "/app/", SlowPath: "/app/slow", PostPath: "/app/form", SkipEchoCheck: true,
				VersionHeader: tc.header, VersionFromBody: tc.fromBody,
			}, 500*time.Millisecond)
			if f := rep.Failures(); len(f) > 0 {
				t.Fatalf("%d failures; first %+v", len(f), f[0])
			}
			for _, r := range rep.Results {
				if r.Version != tc.want {
					t.Fatalf("result %+v: version %q; want %q", r, r.Version, tc.want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range []string{"GET /app/", "GET /app/slow", "POST /app/form"} {
				if paths[p] == 0 {
					t.Errorf("no %q requests; got %v", p, paths)
				}
			}
		})
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(DefaultVersionHeader, "tls1")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshakes below
	srv.StartTLS()
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	rep := runFor(t, Config{
		Target: srv.Listener.Addr().String(), Rate: 100, KeepAliveConns: 2, NewConnFraction: 0.5,
		TLS: &tls.Config{RootCAs: pool, ServerName: "example.com"},
	}, 300*time.Millisecond)
	if rep.Total() == 0 || len(rep.Failures()) > 0 {
		t.Fatalf("%d requests, %d failed; want all ok over TLS", rep.Total(), len(rep.Failures()))
	}
	if v := rep.Versions(); len(v) != 1 || v[0] != "tls1" {
		t.Errorf("versions %v; want [tls1]", v)
	}
	// A client that does not trust the certificate fails every request.
	rep = runFor(t, Config{Target: srv.Listener.Addr().String(), Rate: 50, TLS: &tls.Config{ServerName: "example.com"}}, 100*time.Millisecond)
	if rep.Total() == 0 || len(rep.Failures()) != rep.Total() {
		t.Errorf("untrusted certificate: %d of %d failed; want all", len(rep.Failures()), rep.Total())
	}
}

func TestValidateNewFields(t *testing.T) {
	err := Config{Target: "h:1", SlowPath: "/s?x=1", PostPath: "p", VersionHeader: "X: y"}.Validate()
	for _, want := range []string{"slow path", "post path", "version header"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to mention %q", err, want)
		}
	}
}
