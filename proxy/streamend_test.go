package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A minimal RFC 6455 peer, enough to see the frames baton sends: the
// handshake, and frames read and written whole.

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsWrite writes one frame with FIN set; a client masks (mask=true).
func wsWrite(w io.Writer, op byte, payload []byte, mask bool) error {
	_, err := w.Write(wsFrame(op, payload, mask))
	return err
}

func wsFrame(op byte, payload []byte, mask bool) []byte {
	b := []byte{0x80 | op}
	m := byte(0)
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	p := append([]byte(nil), payload...)
	if mask {
		var key [4]byte
		rand.Read(key[:])
		b = append(b, key[:]...)
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return append(b, p...)
}

// wsRead reads one frame and returns its opcode and unmasked payload.
func wsRead(r *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	var key [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, payload, nil
}

// wsApp is a WebSocket app that echoes text frames. A text frame "split"
// makes it send the frame "part1part2" in two writes, the second one only
// once release is closed. It reports the close frame it receives.
type wsApp struct {
	srv     *httptest.Server
	release chan struct{}
	halfOut chan struct{} // closed once the first half of "split" is out
	closes  chan []byte   // payload of the close frame the app received
}

func newWSApp(t *testing.T) *wsApp {
	t.Helper()
	a := &wsApp{release: make(chan struct{}), halfOut: make(chan struct{}), closes: make(chan []byte, 1)}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want a WebSocket", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		brw.Flush()
		for {
			op, p, err := wsRead(brw.Reader)
			if err != nil {
				return
			}
			switch {
			case op == 8:
				a.closes <- p
				return
			case string(p) == "split":
				f := wsFrame(1, []byte("part1part2"), false)
				conn.Write(f[:7])
				close(a.halfOut)
				<-a.release
				conn.Write(f[7:])
			default:
				conn.Write(wsFrame(1, p, false))
			}
		}
	}))
	t.Cleanup(a.srv.Close)
	t.Cleanup(func() {
		select {
		case <-a.release:
		default:
			close(a.release)
		}
	})
	return a
}

// wsDial opens a WebSocket through the proxy at addr.
func wsDial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("handshake: %s %v", resp.Status, resp.Header)
	}
	return c, br
}

// streamFrontEnd is one of baton's two front ends around its own upstream.
type streamFrontEnd struct {
	name string
	addr string
	u    *Upstream
}

// streamFrontEnds starts, around the app at appAddr, a FastServer (with a
// net/http Fallback, as baton runs it) and a plain net/http server, each
// with a Handler and an Upstream of its own.
func streamFrontEnds(t *testing.T, appAddr string) []streamFrontEnd {
	t.Helper()
	var out []streamFrontEnd
	for _, name := range []string{"fast path", "net/http"} {
		u, err := NewUpstream("blue", appAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.CloseIdleConnections)
		h := NewHandler(Options{})
		h.Route(u)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		if name == "fast path" {
			fast := &FastServer{Router: SingleRoute(h), Fallback: srv}
			go fast.Serve(ln)
			t.Cleanup(func() { ln.Close(); srv.Close(); fast.Close() })
		} else {
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		}
		out = append(out, streamFrontEnd{name: name, addr: ln.Addr().String(), u: u})
	}
	return out
}

// waitAsked waits until streams are open on u and each was asked to end.
func waitAsked(t *testing.T, u *Upstream) {
	t.Helper()
	waitFor(t, func() bool {
		u.streams.mu.Lock()
		defer u.streams.mu.Unlock()
		if len(u.streams.open) == 0 {
			return false
		}
		for st := range u.streams.open {
			if !st.isAsked() {
				return false
			}
		}
		return true
	})
}

func openStreams(u *Upstream) int {
	u.streams.mu.Lock()
	defer u.streams.mu.Unlock()
	return len(u.streams.open)
}

// TestEndStreamsSendsWebSocketGoingAway (issue 13, item 21): at the drain
// deadline a WebSocket gets a close frame 1001 "going away" at a frame
// boundary (a frame the app is half-way through sending is finished
// first), the app gets a masked close frame 1001 too, and the connection
// ends, so the upstream has nothing in flight left.
func TestEndStreamsSendsWebSocketGoingAway(t *testing.T) {
	for _, name := range []string{"fast path", "net/http"} {
		t.Run(name, func(t *testing.T) {
			app := newWSApp(t)
			fe := bothFrontEndsOne(t, app.srv.Listener.Addr().String(), name)
			c, br := wsDial(t, fe.addr)
			if err := wsWrite(c, 1, []byte("hello"), true); err != nil {
				t.Fatal(err)
			}
			if op, p, err := wsRead(br); err != nil || op != 1 || string(p) != "hello" {
				t.Fatalf("echo: op %d %q %v", op, p, err)
			}
			if err := wsWrite(c, 1, []byte("split"), true); err != nil {
				t.Fatal(err)
			}
			// The first half of the frame has passed baton: it is in the
			// middle of a frame when asked to end.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			frame := wsFrame(1, []byte("part1part2"), false)
			half := make([]byte, 7)
			if _, err := io.ReadFull(br, half); err != nil || string(half) != string(frame[:7]) {
				t.Fatalf("first half of the frame: %q, %v", half, err)
			}
			ended := make(chan int, 1)
			go func() { ended <- fe.u.EndStreams(context.Background()) }()
			waitAsked(t, fe.u)
			close(app.release)

			rest := make([]byte, len(frame)-7)
			if _, err := io.ReadFull(br, rest); err != nil || string(rest) != string(frame[7:]) {
				t.Fatalf("the frame in progress: %q, %v; want it finished", rest, err)
			}
			op, p, err := wsRead(br)
			if err != nil || op != 8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1001 || string(p[2:]) != "going away" {
				t.Fatalf("after the frame: op %d %q %v; want a close frame 1001 going away", op, p, err)
			}
			if n := <-ended; n != 1 {
				t.Errorf("EndStreams = %d; want 1", n)
			}
			select {
			case p := <-app.closes:
				if len(p) < 2 || binary.BigEndian.Uint16(p) != 1001 {
					t.Errorf("the app got close frame %q; want 1001", p)
				}
			case <-time.After(5 * time.Second):
				t.Error("the app got no close frame")
			}
			// The client answers the close, as RFC 6455 asks; then the
			// connection ends.
			wsWrite(c, 8, p[:2], true)
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the close frame read %v; want EOF", err)
			}
			waitFor(t, func() bool { return fe.u.InFlight() == 0 && openStreams(fe.u) == 0 })
		})
	}
}

// bothFrontEndsOne returns the front end called name around appAddr.
func bothFrontEndsOne(t *testing.T, appAddr, name string) streamFrontEnd {
	t.Helper()
	for _, fe := range streamFrontEnds(t, appAddr) {
		if fe.name == name {
			return fe
		}
	}
	t.Fatalf("no front end %q", name)
	return streamFrontEnd{}
}

// sseApp streams events: "data: one", then half of "data: two" until
// release is closed, then the rest of it, then nothing until the client
// leaves.
func sseApp(t *testing.T, contentType string) (addr string, release chan struct{}) {
	t.Helper()
	release = make(chan struct{})
	quit := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		fl := w.(http.Flusher)
		fmt.Fprint(w, "data: one\n\n")
		fl.Flush()
		fmt.Fprint(w, "data: tw")
		fl.Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-quit:
			return
		}
		fmt.Fprint(w, "o\n\n")
		fl.Flush()
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(quit) }) // before srv.Close, which waits for the handler
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return srv.Listener.Addr().String(), release
}

// TestEndStreamsEndsServerSentEventsCleanly (issue 13, item 21): at the
// drain deadline an SSE stream ends with the chunked end once the event in
// progress is complete: the client reads every whole event and a clean end
// (no unexpected EOF), and the upstream has nothing in flight left.
func TestEndStreamsEndsServerSentEventsCleanly(t *testing.T) {
	for _, name := range []string{"fast path", "net/http"} {
		t.Run(name, func(t *testing.T) {
			addr, release := sseApp(t, "text/event-stream; charset=utf-8")
			fe := bothFrontEndsOne(t, addr, name)
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
			resp, err := c.Get("http://" + fe.addr + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			got := ""
			for !strings.Contains(got, "data: tw") {
				b, err := br.ReadByte()
				if err != nil {
					t.Fatalf("read %q, then %v", got, err)
				}
				got += string(b)
			}
			ended := make(chan int, 1)
			go func() { ended <- fe.u.EndStreams(context.Background()) }()
			waitAsked(t, fe.u)
			close(release)
			rest, err := io.ReadAll(br)
			got += string(rest)
			if err != nil || got != "data: one\n\ndata: two\n\n" {
				t.Fatalf("stream read %q, %v; want both events and a clean end", got, err)
			}
			if n := <-ended; n != 1 {
				t.Errorf("EndStreams = %d; want 1", n)
			}
			waitFor(t, func() bool { return fe.u.InFlight() == 0 && openStreams(fe.u) == 0 })
		})
	}
}

// TestEndStreamsLeavesOtherAnswers: a chunked answer that is not an event
// stream (a download, say) is not ended: a clean end would pass a cut
// answer off as a whole one.
func TestEndStreamsLeavesOtherAnswers(t *testing.T) {
	for _, name := range []string{"fast path", "net/http"} {
		t.Run(name, func(t *testing.T) {
			addr, release := sseApp(t, "text/plain")
			fe := bothFrontEndsOne(t, addr, name)
			resp, err := http.Get("http://" + fe.addr + "/download")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if n := fe.u.EndStreams(ctx); n != 0 {
				t.Errorf("EndStreams = %d; want 0", n)
			}
			close(release)
			buf := make([]byte, len("data: one\n\ndata: two\n\n"))
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "data: one\n\ndata: two\n\n" {
				t.Fatalf("read %q, %v; want the answer to go on", buf, err)
			}
		})
	}
}
