package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
)

// This file holds the one rule about a request's framing that net/http's
// server cannot be asked to apply: RFC 9112 §6.1 says an HTTP/1.0 request
// with Transfer-Encoding has faulty framing, even with a Content-Length,
// and its connection must be closed. net/http instead ignores
// Transfer-Encoding on HTTP/1.0 (and deletes the header before any handler
// sees it), frames the request by Content-Length and keeps the connection
// open; a load balancer in front that frames by Transfer-Encoding would be
// desynchronised from baton, and the rest of its chunked body read as the
// next request.
//
// So the bytes net/http reads pass through a screen that finds each
// request head, exactly where net/http will read it, before net/http does.
// A head with the faulty framing is replaced by a line net/http answers
// with "400 Bad Request" and a closed connection; nothing of it reaches a
// handler or an app. The fast path never serves HTTP/1.0 (it hands such a
// connection to net/http with everything read ahead), so this is the rule
// for both front ends.
//
// To know where the next head starts, the screen frames each request as
// net/http does when it keeps a connection open: by Content-Length, or no
// body. For everything it cannot frame the same way for sure (chunked
// bodies, which edge.Guard closes the connection after anyway; upgrades
// and CONNECT, after which the bytes are not HTTP; heads it cannot parse,
// which net/http refuses and closes), it stops looking and passes the rest
// of the connection through untouched: it never refuses a request that
// net/http would frame differently.

// ScreenListener wraps ln so that the HTTP/1.x requests of every accepted
// connection are screened before an http.Server reads them (see above).
// maxHeaderBytes is the server's MaxHeaderBytes (0: net/http's default).
// Use it for a plain-HTTP http.Server that serves the Handler without a
// FastServer; FastServer screens the connections it hands over itself.
func ScreenListener(ln net.Listener, maxHeaderBytes int) net.Listener {
	return screenListener{ln, screenLimit(maxHeaderBytes)}
}

// screenLimit is the longest head a screen holds back: what net/http reads
// before it answers 431.
func screenLimit(maxHeaderBytes int) int {
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	return maxHeaderBytes + 4096 // net/http's bufio slop
}

type screenListener struct {
	net.Listener
	limit int
}

func (l screenListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &screenConn{Conn: c}
	sc.s = screen{src: c, limit: l.limit}
	return sc, nil
}

// screenConn is an accepted connection whose reads are screened.
type screenConn struct {
	net.Conn
	s screen
}

func (c *screenConn) Read(p []byte) (int, error) { return c.s.Read(p) }

// CloseWrite lets net/http half-close the connection, as with a
// *net.TCPConn.
func (c *screenConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// faultyFramingLine is what net/http reads instead of a head with faulty
// framing: not a request line, so it answers 400 and closes.
const faultyFramingLine = "Transfer-Encoding in an HTTP/1.0 request\r\n\r\n"

// screen reads src and hands out its bytes one request head at a time,
// each once it is complete and checked. It is used by one reader at a time
// (net/http's connection, whose reads are sequential).
type screen struct {
	src   io.Reader
	limit int // longest head held back; longer ones pass unscreened

	pending  []byte // read from src, not yet checked
	out      []byte // checked, not yet read
	bodyLeft int64  // body bytes of the current request still to pass
	searched int    // pending holds no blank line (nor, until lineOK, LF) before this offset
	lineOK   bool   // the request line of the head in pending is complete and HTTP/1.x
	lastPOST bool   // net/http skips up to 4 CR/LF before a head after a POST
	blind    bool   // framing unknown from here on: pass everything
	refused  bool   // a faulty head was replaced: nothing more is read
	err      error  // src's error, returned once pending is out
}

func (s *screen) Read(p []byte) (int, error) {
	for {
		if len(s.out) > 0 {
			n := copy(p, s.out)
			s.out = s.out[n:]
			return n, nil
		}
		if len(s.pending) > 0 && (s.blind || s.bodyLeft > 0 || s.err != nil) {
			k := len(s.pending)
			if !s.blind && s.err == nil {
				k = int(min(int64(k), s.bodyLeft))
				s.bodyLeft -= int64(k)
			}
			s.out, s.pending = s.pending[:k], s.pending[k:]
			continue
		}
		switch {
		case s.err != nil:
			return 0, s.err
		case s.refused:
			// net/http answers the replacement and closes; until then a
			// read (its check for the client leaving) just waits.
			var b [512]byte
			for {
				if _, err := s.src.Read(b[:]); err != nil {
					return 0, err
				}
			}
		case s.blind:
			return s.src.Read(p)
		case s.bodyLeft > 0:
			if int64(len(p)) > s.bodyLeft {
				p = p[:s.bodyLeft]
			}
			n, err := s.src.Read(p)
			s.bodyLeft -= int64(n)
			return n, err
		}
		if s.check() {
			continue
		}
		if len(s.pending) > s.limit {
			s.blind = true // net/http answers 431
			continue
		}
		s.pending = slices.Grow(s.pending, 4096)
		n, err := s.src.Read(s.pending[len(s.pending):cap(s.pending)])
		s.pending = s.pending[:len(s.pending)+n]
		if err != nil {
			var ne net.Error
			if n == 0 && errors.As(err, &ne) && ne.Timeout() {
				// A deadline net/http set (read-header timeout, or the end
				// of its background read): the head so far stays here.
				return 0, err
			}
			s.err = err
		}
	}
}

// check looks for a complete head at the start of pending. If there is
// one, it moves it to out (or its replacement, if its framing is faulty),
// sets the framing of what follows, and returns true.
func (s *screen) check() bool {
	b := s.pending
	skip := 0
	if s.lastPOST {
		for skip < len(b) && skip < 4 && (b[skip] == '\r' || b[skip] == '\n') {
			skip++
		}
	}
	// Each look goes over what was not searched yet, so that a head
	// trickled in byte by byte is not scanned again for each byte.
	if !s.lineOK {
		if bytes.IndexByte(b[max(skip, s.searched):], '\n') < 0 {
			s.searched = len(b)
			return false
		}
		if !maybeHTTP1(b[skip:]) {
			// HTTP/0.9 or not HTTP: no blank line is coming; net/http
			// answers it at once (400 or 505), as the fast path leaves it
			// to do.
			s.blind = true
			return true
		}
		s.lineOK = true
	}
	// Only a blank line ends a head.
	from := max(skip, s.searched-2)
	if bytes.Index(b[from:], lflf) < 0 && bytes.Index(b[from:], crlfcrlf[1:]) < 0 {
		s.searched = len(b)
		return false
	}
	end, line, faulty, framing := scanHead(b[skip:])
	if end < 0 {
		return false
	}
	end += skip
	s.searched, s.lineOK = 0, false
	s.lastPOST = string(line) == "POST"
	switch {
	case faulty:
		s.out = []byte(faultyFramingLine)
		s.pending = nil
		s.refused = true
		return true
	case framing < 0:
		s.blind = true
	default:
		s.bodyLeft = framing
	}
	s.out, s.pending = b[:end], b[end:]
	return true
}

// scanHead finds the end of the request head at the start of b, as
// net/http's reader ends it (at an empty line; lines end in LF or CRLF),
// and reads what the screen needs of it: the method, whether its framing is
// faulty (HTTP/1.0 with Transfer-Encoding), and the body length that
// follows it, or -1 if the screen cannot tell (see the top of the file).
// end is -1 if b holds no complete head yet.
func scanHead(b []byte) (end int, method []byte, faulty bool, bodyLen int64) {
	var (
		first                    = true
		http10, te, upgrade, bad bool
		cl                       []byte
	)
	for pos := 0; ; {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			return -1, nil, false, 0
		}
		line := b[pos : pos+i]
		pos += i + 1
		line = bytes.TrimSuffix(line, []byte("\r"))
		if first {
			first = false
			m, rest, ok1 := bytes.Cut(line, []byte(" "))
			_, proto, ok2 := bytes.Cut(rest, []byte(" "))
			switch {
			case !ok1 || !ok2:
				bad = true
			case string(proto) == "HTTP/1.0":
				http10 = true
			case !bytes.HasPrefix(proto, []byte("HTTP/1.")):
				bad = true
			}
			method = m
			if string(m) == http.MethodConnect {
				bad = true
			}
			continue
		}
		if len(line) == 0 {
			switch {
			case http10 && te:
				return pos, method, true, 0
			case bad || te || upgrade:
				return pos, method, false, -1
			case cl == nil:
				return pos, method, false, 0
			}
			n, ok := parseContentLength(cl)
			if !ok {
				return pos, method, false, -1
			}
			return pos, method, false, n
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // obs-fold: part of the field before
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			bad = true
			continue
		}
		value = trimOWS(value)
		switch {
		case equalFold(name, "transfer-encoding"):
			te = true
		case equalFold(name, "upgrade"):
			upgrade = true
		case equalFold(name, "content-length"):
			if cl != nil && !bytes.Equal(cl, value) {
				bad = true // net/http refuses differing lengths
			}
			cl = value
		}
	}
}
