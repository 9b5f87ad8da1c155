package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Long-lived streams, WebSockets and server-sent events, are what keeps a
// drain from finishing: they last as long as the client stays. When the
// drain deadline passes, Upstream.EndStreams ends them cleanly instead of
// leaving them to break when the old app is signalled: a WebSocket gets a
// close frame 1001 "going away" (and the app a masked one), an event stream
// the end of its chunked body. Both happen at a frame boundary of the
// app's stream, never inside a frame or an event, so the client sees a
// clean end and reconnects, to the new colour.
//
// A stream is wrapped in an endingReader at the point the app's answer is
// read: the transport's readResponse for net/http (a 101 with Upgrade:
// websocket, an answer of type text/event-stream without a length) and the
// fast path's relay of a chunked event stream. The reader tracks the frame
// boundaries of what it passes through (framer); once asked to end, it
// ends at the next boundary. Other answers, a chunked download included,
// are never ended: a clean end would pass a cut answer off as a whole one.

// closeFrame is an unmasked close frame, app to client, with status 1001
// "going away" (RFC 6455 §7.4.1: an endpoint going away, such as a server
// going down).
var closeFrame = []byte{0x88, 12, 0x03, 0xe9, 'g', 'o', 'i', 'n', 'g', ' ', 'a', 'w', 'a', 'y'}

// lastChunk ends a chunked body without trailers.
var lastChunk = []byte("0\r\n\r\n")

// errStreamEnded is what a client's write to a WebSocket gets once baton
// has ended it.
var errStreamEnded = errors.New("proxy: stream ended at the drain deadline")

// streamSet is the streams open on one upstream.
type streamSet struct {
	mu   sync.Mutex
	open map[*stream]struct{}
}

// start registers a stream; abort wakes a read of it that is blocked on the
// app.
func (s *streamSet) start(abort func()) *stream {
	st := &stream{set: s, abort: abort, done: make(chan struct{})}
	s.mu.Lock()
	if s.open == nil {
		s.open = map[*stream]struct{}{}
	}
	s.open[st] = struct{}{}
	s.mu.Unlock()
	return st
}

// end asks every open stream to end and waits until each has, or ctx is
// done. It returns how many ended cleanly.
func (s *streamSet) end(ctx context.Context) int {
	s.mu.Lock()
	open := make([]*stream, 0, len(s.open))
	for st := range s.open {
		open = append(open, st)
	}
	s.mu.Unlock()
	for _, st := range open {
		st.ask()
	}
	n := 0
	for _, st := range open {
		select {
		case <-st.done:
		case <-ctx.Done():
		}
		if st.ended.Load() {
			n++
		}
	}
	return n
}

// stream is one long-lived stream of an upstream.
type stream struct {
	set   *streamSet
	abort func()
	ended atomic.Bool   // its clean end was sent
	done  chan struct{} // closed by finish
	once  sync.Once

	mu      sync.Mutex
	asked   bool // EndStreams wants it to end
	waiting bool // its reader waits for the app at a frame boundary
}

// ask asks st to end at its next frame boundary; if its reader is waiting
// for the app right at one, the wait is cut short.
func (st *stream) ask() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.asked = true
	if st.waiting {
		st.abort()
	}
}

func (st *stream) isAsked() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.asked
}

// enterWait is called at a frame boundary before a read from the app: it
// reports whether the stream is to end instead.
func (st *stream) enterWait() (end bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.waiting = !st.asked
	return st.asked
}

// leaveWait follows the read enterWait allowed; it reports whether the
// stream was asked to end meanwhile.
func (st *stream) leaveWait() (end bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.waiting = false
	return st.asked
}

// finish unregisters st, once its end was sent or it ended on its own.
func (st *stream) finish() {
	st.once.Do(func() {
		st.set.mu.Lock()
		delete(st.set.open, st)
		st.set.mu.Unlock()
		close(st.done)
	})
}

// framer follows the frame boundaries of a stream's bytes.
type framer interface {
	// scan follows p and returns the length of its prefix that ends at
	// the first frame boundary in it, or len(p) and false.
	scan(p []byte) (n int, boundary bool)
	// atBoundary reports whether what was scanned so far ends at a frame
	// boundary where the stream may end (never once the app began its
	// own end).
	atBoundary() bool
}

// endingReader passes the app's stream through until it is asked to end;
// then, at the next frame boundary, it returns end and io.EOF.
type endingReader struct {
	r     io.Reader
	f     framer
	st    *stream
	end   []byte // the stream's clean end, e.g. a close frame; nil for none
	onEnd func() // run once the end is due, before it is returned
	done  bool
}

func (e *endingReader) Read(p []byte) (int, error) {
	if e.done {
		if len(e.end) > 0 {
			n := copy(p, e.end)
			e.end = e.end[n:]
			return n, nil
		}
		return 0, io.EOF
	}
	at := e.f.atBoundary()
	if at && e.st.enterWait() {
		return e.stop(p)
	}
	n, err := e.r.Read(p)
	if at && e.st.leaveWait() {
		// Whatever followed the boundary belongs to the next frame: the
		// client will not see it, nor a broken frame.
		return e.stop(p)
	}
	if !at && e.st.isAsked() {
		if k, ok := e.f.scan(p[:n]); ok {
			e.stopAfter()
			return k, nil
		}
		return n, err
	}
	for k := 0; k < n; {
		m, _ := e.f.scan(p[k:n])
		k += m
	}
	return n, err
}

// stop ends the stream now.
func (e *endingReader) stop(p []byte) (int, error) {
	e.stopAfter()
	return e.Read(p)
}

// stopAfter makes the next reads return the stream's end.
func (e *endingReader) stopAfter() {
	e.done = true
	if e.onEnd != nil {
		e.onEnd()
	}
	e.st.ended.Store(true)
	e.st.finish()
}

// abortRead returns a function that wakes a read on nc blocked on the app.
func abortRead(nc net.Conn) func() {
	return func() { nc.SetReadDeadline(aLongTimeAgo) }
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// isWebSocket reports whether an Upgrade header value names websocket.
func isWebSocket(upgrade string) bool {
	return strings.EqualFold(strings.TrimSpace(upgrade), "websocket")
}

// eventBoundary follows the end of an event stream's data: it is at a
// boundary when nothing was sent yet or the last event is complete (a
// blank line ends it).
type eventBoundary struct {
	last uint32 // the last four bytes
	seen bool
}

func (b *eventBoundary) add(c byte) { b.last, b.seen = b.last<<8|uint32(c), true }

func (b *eventBoundary) at() bool {
	two := b.last & 0xffff
	return !b.seen || two == '\n'<<8|'\n' || two == '\r'<<8|'\r' || b.last == '\r'<<24|'\n'<<16|'\r'<<8|'\n'
}

// eventFramer follows a decoded event stream (net/http's path).
type eventFramer struct{ ev eventBoundary }

func (f *eventFramer) scan(p []byte) (int, bool) {
	for i, c := range p {
		f.ev.add(c)
		if f.ev.at() {
			return i + 1, true
		}
	}
	return len(p), false
}

func (f *eventFramer) atBoundary() bool { return f.ev.at() }

// chunkedEventFramer follows an event stream in its chunked framing, as the
// fast path relays it: a boundary is the start of a chunk after a complete
// event. Validating the framing is copyChunked's business: this only must
// not be misled into a boundary by bytes that copyChunked will refuse.
type chunkedEventFramer struct {
	ev     eventBoundary
	inData bool
	left   int64 // of the chunk's data and its CRLF
	line   int   // bytes of the chunk-size line so far
	size   int64
	inExt  bool
	final  bool // the last chunk began: the app ends the stream itself
}

func (f *chunkedEventFramer) scan(p []byte) (int, bool) {
	for i := 0; i < len(p); i++ {
		if f.final {
			return len(p), false
		}
		if f.inData {
			k := int(min(int64(len(p)-i), f.left))
			for j, c := range p[i : i+k] {
				if f.left-int64(j) > 2 { // the chunk's CRLF is not data
					f.ev.add(c)
				}
			}
			f.left -= int64(k)
			i += k - 1
			if f.left == 0 {
				f.inData = false
				if f.ev.at() {
					return i + 1, true
				}
			}
			continue
		}
		c := p[i]
		f.line++
		switch {
		case c == '\n':
			if f.size == 0 {
				f.final = true
				continue
			}
			f.inData, f.left = true, f.size+2
			f.line, f.size, f.inExt = 0, 0, false
		case f.inExt || c == '\r' || c == ' ' || c == '\t':
		case c == ';':
			f.inExt = true
		case f.size >= 1<<40:
			f.final = true // not a size copyChunked takes
		default:
			f.size = f.size<<4 | int64(unhex(c))
		}
	}
	return len(p), false
}

func (f *chunkedEventFramer) atBoundary() bool {
	return !f.final && !f.inData && f.line == 0 && f.ev.at()
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0
}

// wsFramer follows WebSocket frames (RFC 6455 §5.2) in one direction.
type wsFramer struct {
	hdr   [14]byte
	hdrN  int    // header bytes so far
	need  int    // header length, once its second byte is in
	left  uint64 // payload bytes to go
	final bool   // a close frame began
}

func (f *wsFramer) scan(p []byte) (int, bool) {
	for i := 0; i < len(p); i++ {
		if f.final {
			return len(p), false
		}
		if f.left > 0 {
			k := min(uint64(len(p)-i), f.left)
			f.left -= k
			i += int(k) - 1
			if f.left == 0 {
				return i + 1, true
			}
			continue
		}
		f.hdr[f.hdrN] = p[i]
		f.hdrN++
		if f.hdrN == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4
			}
		}
		if f.hdrN < 2 || f.hdrN < f.need {
			continue
		}
		n := uint64(f.hdr[1] & 0x7f)
		switch n {
		case 126:
			n = uint64(f.hdr[2])<<8 | uint64(f.hdr[3])
		case 127:
			n = 0
			for _, b := range f.hdr[2:10] {
				n = n<<8 | uint64(b)
			}
		}
		if f.hdr[0]&0x0f == 8 {
			f.final = true
		}
		f.hdrN, f.left = 0, n
		if n == 0 && !f.final {
			return i + 1, true
		}
	}
	return len(p), false
}

func (f *wsFramer) atBoundary() bool { return !f.final && f.hdrN == 0 && f.left == 0 }

// endingWebSocket is an upgraded WebSocket connection to the app that
// EndStreams can end: reads carry the app's frames to the client, writes
// the client's to the app.
type endingWebSocket struct {
	endingReader
	rwc     io.ReadWriteCloser
	nc      net.Conn
	wmu     sync.Mutex
	w       wsFramer // the client's frames
	wclosed atomic.Bool
}

// webSocket wraps rwc, the upgraded connection nc to the app.
func (s *streamSet) webSocket(rwc io.ReadWriteCloser, nc net.Conn) io.ReadWriteCloser {
	ws := &endingWebSocket{rwc: rwc, nc: nc}
	ws.endingReader = endingReader{r: rwc, f: &wsFramer{}, st: s.start(abortRead(nc)), end: closeFrame, onEnd: ws.closeApp}
	return ws
}

func (ws *endingWebSocket) Write(p []byte) (int, error) {
	ws.wmu.Lock()
	defer ws.wmu.Unlock()
	if ws.wclosed.Load() {
		return 0, errStreamEnded
	}
	n, err := ws.rwc.Write(p)
	for k := 0; k < n; {
		m, _ := ws.w.scan(p[k:n])
		k += m
	}
	return n, err
}

// closeApp ends the app's side: a masked close frame 1001 if the client's
// stream is at a frame boundary (a write in progress is not), then the
// connection closes.
func (ws *endingWebSocket) closeApp() {
	ws.wclosed.Store(true)
	if ws.wmu.TryLock() {
		if ws.w.atBoundary() {
			ws.nc.SetWriteDeadline(time.Now().Add(time.Second))
			ws.rwc.Write(maskedCloseFrame())
		}
		ws.wmu.Unlock()
	}
	ws.rwc.Close()
}

func (ws *endingWebSocket) Close() error {
	ws.st.finish()
	return ws.rwc.Close()
}

// maskedCloseFrame is a close frame 1001 as a client sends it: masked with
// a fresh key (RFC 6455 §5.3).
func maskedCloseFrame() []byte {
	payload := closeFrame[2:]
	f := make([]byte, 6, 6+len(payload))
	f[0], f[1] = 0x88, 0x80|byte(len(payload))
	rand.Read(f[2:6])
	for i, c := range payload {
		f = append(f, c^f[2+i%4])
	}
	return f
}

// eventStream wraps the decoded body of an event stream read from nc.
func (s *streamSet) eventStream(body io.ReadCloser, nc net.Conn) io.ReadCloser {
	return &endingBody{endingReader: endingReader{r: body, f: &eventFramer{}, st: s.start(abortRead(nc))}, body: body}
}

type endingBody struct {
	endingReader
	body io.ReadCloser
}

// Close closes the app's body: after an end, the connection goes, with
// whatever the app sent after the boundary.
func (b *endingBody) Close() error {
	b.st.finish()
	return b.body.Close()
}

// endableBody returns the reader of a chunked answer's body on uc: uc.br,
// or for an event stream a reader that EndStreams can end, with its stream
// (nil otherwise), which the caller finishes.
func (c *fastConn) endableBody(u *Upstream, uc *upConn) (*bufio.Reader, *stream) {
	for i := range c.resp.fields {
		f := &c.resp.fields[i]
		if len(f.name) == len("content-type") && equalFold(f.name, "content-type") && isEventStream(string(f.value)) {
			st := u.streams.start(abortRead(uc.nc))
			return bufio.NewReader(&endingReader{r: uc.br, f: &chunkedEventFramer{}, st: st, end: lastChunk}), st
		}
	}
	return uc.br, nil
}
