package edge

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/batonproxy/baton/proxy"
)

// guarded returns a front server running Guard around a real
// proxy.Handler, and a counter of the requests the app behind it saw.
func guarded(t *testing.T) (front *httptest.Server, appHits *atomic.Int64) {
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
	front = httptest.NewServer(Guard(h))
	t.Cleanup(front.Close)
	return front, appHits
}

// TestGuardClosesAfterChunked checks that an HTTP/1.1 request framed by
// Transfer-Encoding is answered with Connection: close and that nothing
// pipelined behind it is read.
func TestGuardClosesAfterChunked(t *testing.T) {
	front, appHits := guarded(t)
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
