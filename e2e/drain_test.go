package e2e

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDrainDeadlineEndsEventStreams (issue 13, item 21) with the real
// binary: an SSE stream still open on the old colour at the drain deadline
// ends cleanly (the client reads whole events and a clean end, not a broken
// body) before the old app is stopped, and the switch says so.
func TestDrainDeadlineEndsEventStreams(t *testing.T) {
	b := newBaton(t, "--drain-timeout", "300ms")
	blue := startApp(t, b.blue, "v1")
	waitListening(t, blue, 10*time.Second)
	green := startApp(t, b.green, "v2")
	waitListening(t, green, 10*time.Second)
	b.start()

	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get("http://" + b.http + "/sse?n=100000&interval=20ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first event: %q, %v", line, err)
	}
	done := make(chan error, 1)
	var rest strings.Builder
	go func() {
		_, err := io.Copy(&rest, br)
		done <- err
	}()
	out, code := b.cli("switch")
	if code != 0 || !strings.Contains(out, "ended 1 WebSocket or event stream(s) on blue") {
		t.Fatalf("switch exited %d; want 0 and the ended stream reported:\n%s", code, out)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the stream broke off (%v); want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
	if s := rest.String(); !strings.HasSuffix(s, "\n\n") {
		t.Errorf("the stream ended inside an event: %q", s[max(0, len(s)-40):])
	}
}
