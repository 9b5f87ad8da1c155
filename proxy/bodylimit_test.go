package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// onlyReader hides a reader's type so that http.NewRequest cannot learn
// the length: the body goes out chunked.
type onlyReader struct{ io.Reader }

// The body limit (Options.MaxBodyBytes) on both front ends: a declared
// length over it is a 413 that never reaches the app, a chunked body over
// it is cut and answered 413, and no limit lets everything through.
func TestBodyLimitOnBothFrontEnds(t *testing.T) {
	const limit = 1000
	for _, fe := range []string{"fast path", "net/http"} {
		var appHits atomic.Int64
		app := serve(t, func(w http.ResponseWriter, r *http.Request) {
			appHits.Add(1)
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return // the proxy cut the body; nobody reads this answer
			}
			fmt.Fprintf(w, "got %d bytes", len(b))
		})
		limited := NewHandler(Options{MaxBodyBytes: limit})
		limited.Route(mustUpstream(t, "blue", app))
		open := NewHandler(Options{})
		open.Route(mustUpstream(t, "blue", app))
		addr, openAddr := policyFrontEnd(t, fe, limited), policyFrontEnd(t, fe, open)
		for _, tc := range []struct {
			name    string
			addr    string
			size    int
			chunked bool
			want    int
			// toApp is whether the app must see the request: "yes", "no",
			// or "maybe" where it depends on timing.
			toApp string
		}{
			{"declared length at the limit", addr, limit, false, 200, "yes"},
			{"declared length over the limit", addr, limit + 1, false, 413, "no"},
			{"chunked under the limit", addr, limit - 1, true, 200, "yes"},
			{"chunked at the limit", addr, limit, true, 200, "yes"},
			// The proxy streams a chunked body, so the app may or may not
			// have started its handler when the limit cuts the request
			// off: what matters is that the client gets the 413.
			{"chunked over the limit", addr, 64 * limit, true, 413, "maybe"},
			{"empty", addr, 0, false, 200, "yes"},
			{"no limit", openAddr, 1 << 20, true, 200, "yes"},
		} {
			t.Run(fe+"/"+tc.name, func(t *testing.T) {
				before := appHits.Load()
				var body io.Reader = strings.NewReader(strings.Repeat("x", tc.size))
				if tc.chunked {
					body = onlyReader{body}
				}
				req, _ := http.NewRequest(http.MethodPost, "http://"+tc.addr+"/upload", body)
				resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("status = %d (%q); want %d", resp.StatusCode, b, tc.want)
				}
				if tc.want == 200 && string(b) != fmt.Sprintf("got %d bytes", tc.size) {
					t.Errorf("body = %q; want the app to get all %d bytes", b, tc.size)
				}
				if tc.want == 413 && (!strings.Contains(string(b), tooLargeMessage(limit)) || !resp.Close) {
					t.Errorf("body = %q, close = %v; want %q and the connection closed", b, resp.Close, tooLargeMessage(limit))
				}
				if hit := appHits.Load() > before; tc.toApp != "maybe" && hit != (tc.toApp == "yes") {
					t.Errorf("request reached the app: %v; want %s", hit, tc.toApp)
				}
			})
		}
	}
}
