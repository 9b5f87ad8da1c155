package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/batonproxy/baton/proxy"
)

// guarded returns a front server running Guard(limit) around a real
// proxy.Handler, and a counter of the requests the app behind it saw.
func guarded(t *testing.T, limit int64) (front *httptest.Server, appHits *atomic.Int64) {
	t.Helper()
	appHits = new(atomic.Int64)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appHits.Add(1)
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // the proxy cut the body; nobody reads this answer
		}
		fmt.Fprintf(w, "got %d bytes", len(b))
	}))
	t.Cleanup(app.Close)
	u, err := proxy.NewUpstream("blue", app.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	h := proxy.NewHandler(proxy.Options{})
	h.Route(u)
	front = httptest.NewServer(Guard(h, limit))
	t.Cleanup(front.Close)
	return front, appHits
}

// onlyReader hides a reader's type so that http.NewRequest cannot learn
// the length: the body goes out chunked.
type onlyReader struct{ io.Reader }

func TestGuardMaxBody(t *testing.T) {
	const limit = 1000
	front, appHits := guarded(t, limit)
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		want    int
		// toApp is whether the app must see the request: "yes", "no", or
		// "maybe" where it depends on timing.
		toApp string
	}{
		{"declared length at the limit", limit, false, 200, "yes"},
		{"declared length over the limit", limit + 1, false, 413, "no"},
		{"chunked under the limit", limit - 1, true, 200, "yes"},
		{"chunked at the limit", limit, true, 200, "yes"},
		// The proxy streams a chunked body, so the app may or may not have
		// started its handler when the limit cuts the request off: what
		// matters is that the client gets the 413.
		{"chunked over the limit", 64 * limit, true, 413, "maybe"},
		{"empty", 0, false, 200, "yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := appHits.Load()
			var body io.Reader = strings.NewReader(strings.Repeat("x", tc.size))
			if tc.chunked {
				body = onlyReader{body}
			}
			req, _ := http.NewRequest(http.MethodPost, front.URL+"/upload", body)
			resp, err := http.DefaultClient.Do(req)
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
			if tc.want == 413 && !strings.Contains(string(b), "413") {
				t.Errorf("body = %q; want a 413 message", b)
			}
			if hit := appHits.Load() > before; tc.toApp != "maybe" && hit != (tc.toApp == "yes") {
				t.Errorf("request reached the app: %v; want %s", hit, tc.toApp)
			}
		})
	}
}

func TestGuardNoLimit(t *testing.T) {
	front, _ := guarded(t, 0)
	resp, err := http.Post(front.URL, "text/plain", onlyReader{strings.NewReader(strings.Repeat("x", 1<<20))})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != fmt.Sprintf("got %d bytes", 1<<20) {
		t.Errorf("body = %q; want all of a 1 MiB upload through", b)
	}
}

// TestGuardClosesAfterChunked checks that an HTTP/1.1 request framed by
// Transfer-Encoding is answered with Connection: close and that nothing
// pipelined behind it is read.
func TestGuardClosesAfterChunked(t *testing.T) {
	front, appHits := guarded(t, 0)
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "got 3 bytes" || !resp.Close {
		t.Errorf("got %d %q close=%v; want 200 \"got 3 bytes\" with Connection: close", resp.StatusCode, b, resp.Close)
	}
	if _, err := http.ReadResponse(br, nil); err == nil {
		t.Error("the pipelined request after a chunked one was answered; want the connection closed")
	}
	if n := appHits.Load(); n != 1 {
		t.Errorf("app saw %d requests; want 1", n)
	}
}
