package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// This file parses HTTP/1.1 heads for the fast path (fast.go) in place, in
// the bufio.Reader's buffer, without building an http.Header.
//
// The request parser is deliberately narrow: it accepts the plain,
// well-formed requests that browsers, curl and load balancers send, and
// answers "not mine" for everything else (chunked or upgraded requests,
// Expect, HTTP/1.0, absolute-form targets, odd bytes, oversized heads).
// Those go to net/http untouched, which then applies its own rules and
// errors. So a request the fast path serves is one net/http would accept
// as well, and nothing the fast path parses decides a framing question
// that net/http would have decided differently (the request-smuggling
// shapes all fall back).

// maxFields bounds the header fields of a request the fast path serves; a
// request with more goes to net/http.
const maxFields = 64

// Field kinds the fast path acts on. Everything else is forwarded as is.
const (
	fOther uint8 = iota
	fHost
	fContentLength
	fConnection
	fHopByHop  // dropped: Keep-Alive, Proxy-Connection, Proxy-Authorization, Proxy-Authenticate, Trailer
	fForwarded // dropped and replaced: Forwarded, X-Forwarded-Host/-Proto, X-Real-Ip
	fXFF       // X-Forwarded-For: appended to
	fXFHost    // X-Forwarded-Host
	fXFProto   // X-Forwarded-Proto
	fFallback  // Transfer-Encoding, Expect, Upgrade, TE: net/http's business
	fTransferEncoding
)

type field struct {
	name, value []byte
	kind        uint8
}

// reqHead is a parsed request head. Its slices point into the reader's
// buffer and are valid until the head is discarded.
type reqHead struct {
	method, target []byte
	fields         [maxFields]field
	n              int
	host           []byte
	contentLength  int64
	close          bool // the client sent "Connection: close"
}

// errNotFast is returned for a request the fast path leaves to net/http.
var errNotFast = errors.New("proxy: request left to net/http")

// endOfHead returns the length of the head at the start of b, through its
// blank line, or -1 if b holds no complete head. bareLF reports a head
// whose lines end in a lone LF, which only net/http's lenient reader takes.
func endOfHead(b []byte) (n int, bareLF bool) {
	i := bytes.Index(b, crlfcrlf[1:]) // "\n\r\n"
	j := bytes.Index(b, lflf)
	switch {
	case j >= 0 && (i < 0 || j < i):
		return j + 2, true
	case i >= 0:
		return i + 3, false
	}
	return -1, false
}

var (
	crlfcrlf = []byte("\r\n\r\n")
	lflf     = []byte("\n\n")
	crlf     = []byte("\r\n")
)

// maybeHTTP1 reports whether b, the start of a request head, can still
// become an HTTP/1.0 or HTTP/1.1 one: its first line is incomplete or ends
// in one of those versions.
func maybeHTTP1(b []byte) bool {
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		return true
	}
	line := bytes.TrimSuffix(b[:eol], []byte("\r"))
	return bytes.HasSuffix(line, []byte(" HTTP/1.1")) || bytes.HasSuffix(line, []byte(" HTTP/1.0"))
}

// parseRequest parses head (request line through blank line) into rh, or
// returns errNotFast.
func parseRequest(head []byte, rh *reqHead) error {
	*rh = reqHead{contentLength: 0}
	eol := bytes.Index(head, crlf)
	if eol <= 0 {
		return errNotFast
	}
	line := head[:eol]
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errNotFast
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errNotFast
	}
	rh.method, rh.target = line[:sp1], rest[:sp2]
	if string(rest[sp2+1:]) != "HTTP/1.1" || !isToken(rh.method) || !validTarget(rh.target) {
		return errNotFast
	}
	if string(rh.method) == "CONNECT" || string(rh.method) == "PRI" {
		return errNotFast
	}
	hosts, lengths := 0, 0
	for p := head[eol+2:]; len(p) > 2; {
		var f field
		var ok bool
		if f, _, p, ok = nextField(p); !ok || rh.n == maxFields {
			return errNotFast // includes a bare LF or CR, and obs-fold (a name starting with a blank)
		}
		value := f.value
		switch f.kind {
		case fFallback, fTransferEncoding:
			return errNotFast
		case fHost:
			hosts++
			if len(value) == 0 || !validHost(value) {
				return errNotFast
			}
			rh.host = value
		case fContentLength:
			lengths++
			n, ok := parseContentLength(value)
			if !ok {
				return errNotFast
			}
			rh.contentLength = n
		case fConnection:
			if !connectionCloseOrKeepAlive(value, &rh.close) {
				return errNotFast // names other fields, or asks for an upgrade
			}
		}
		rh.fields[rh.n] = f
		rh.n++
	}
	if hosts != 1 || lengths > 1 {
		return errNotFast
	}
	return nil
}

// nextField parses the header line at the start of p (which holds the
// rest of a head) into a field and returns it with the line and what
// follows it. ok is false for a line without CRLF, without a colon, with a
// name that is not a token, or with control bytes in its value.
func nextField(p []byte) (f field, line, rest []byte, ok bool) {
	eol := bytes.Index(p, crlf)
	if eol < 0 {
		return field{}, p, nil, false
	}
	line, rest = p[:eol], p[eol+2:]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return field{}, line, rest, false
	}
	name, value := line[:colon], trimOWS(line[colon+1:])
	if !isToken(name) || !validFieldValue(value) {
		return field{}, line, rest, false
	}
	return field{name: name, value: value, kind: fieldKind(name)}, line, rest, true
}

// fieldKind classifies a field name, case-insensitively; requests and
// answers share the table.
func fieldKind(name []byte) uint8 {
	switch len(name) {
	case 2:
		if equalFold(name, "te") {
			return fFallback
		}
	case 4:
		if equalFold(name, "host") {
			return fHost
		}
	case 6:
		if equalFold(name, "expect") {
			return fFallback
		}
	case 7:
		if equalFold(name, "upgrade") {
			return fFallback
		}
		if equalFold(name, "trailer") {
			return fHopByHop
		}
	case 9:
		if equalFold(name, "forwarded") || equalFold(name, "x-real-ip") {
			return fForwarded
		}
	case 10:
		if equalFold(name, "connection") {
			return fConnection
		}
		if equalFold(name, "keep-alive") {
			return fHopByHop
		}
	case 14:
		if equalFold(name, "content-length") {
			return fContentLength
		}
	case 15:
		if equalFold(name, "x-forwarded-for") {
			return fXFF
		}
	case 16:
		if equalFold(name, "x-forwarded-host") {
			return fXFHost
		}
		if equalFold(name, "proxy-connection") {
			return fHopByHop
		}
	case 17:
		if equalFold(name, "x-forwarded-proto") {
			return fXFProto
		}
		if equalFold(name, "transfer-encoding") {
			return fTransferEncoding
		}
	case 18:
		if equalFold(name, "proxy-authenticate") {
			return fHopByHop
		}
	case 19:
		if equalFold(name, "proxy-authorization") {
			return fHopByHop
		}
	}
	return fOther
}

// connectionCloseOrKeepAlive reports whether a Connection value holds only
// "close" and "keep-alive" tokens, and sets *close if it holds "close".
func connectionCloseOrKeepAlive(v []byte, close *bool) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v = nextToken(v)
		switch {
		case len(tok) == 0:
		case equalFold(tok, "close"):
			*close = true
		case equalFold(tok, "keep-alive"):
		default:
			return false
		}
	}
	return true
}

// nextToken splits the first element off a comma-separated field value,
// without the blanks around it.
func nextToken(v []byte) (tok, rest []byte) {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		return trimOWS(v[:i]), v[i+1:]
	}
	return trimOWS(v), nil
}

// equalFold reports whether b equals the lower-case ASCII s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTokenByte[c] {
			return false
		}
	}
	return true
}

// validTarget accepts an origin-form target ("/path?query") of visible
// ASCII with well-formed percent escapes and no fragment. net/http refuses a
// path with a bad escape, and ReverseProxy drops query parameters that
// url.ParseQuery rejects (a bad escape, a ';'), so that the app cannot read
// a parameter the proxy did not see; such targets are left to them.
func validTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inQuery := false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c <= ' ' || c >= 0x7f || c == '#':
			return false
		case c == '?':
			inQuery = true
		case c == ';' && inQuery:
			return false
		case c == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validFieldValue rejects control characters other than HTAB, as net/http
// does, and DEL.
func validFieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts the bytes net/http accepts in a Host header (httpguts'
// ValidHostHeader).
func validHost(v []byte) bool {
	for _, c := range v {
		if !isHostByte[c] {
			return false
		}
	}
	return true
}

var isHostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseContentLength accepts 1 to 18 decimal digits, nothing else.
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// respHead is a parsed response head from the app; slices point into the
// buffer it was parsed from.
type respHead struct {
	status        int
	statusText    []byte // code and reason: "200 OK"
	http10        bool
	fields        []field // reused across requests
	contentLength int64   // -1 if none
	chunked       bool
	otherCoding   bool // a Transfer-Encoding other than chunked: body runs to EOF
	close         bool // the app said Connection: close
	dropNames     [][]byte
}

// errBadResponse is an answer from the app that cannot be relayed.
type errBadResponse struct{ why string }

func (e errBadResponse) Error() string { return "proxy: malformed answer from the app: " + e.why }

// parseResponse parses head into rh.
func parseResponse(head []byte, rh *respHead) error {
	fields, drop := rh.fields[:0], rh.dropNames[:0]
	*rh = respHead{fields: fields, dropNames: drop, contentLength: -1}
	eol := bytes.Index(head, crlf)
	if eol < 0 {
		return errBadResponse{"no status line"}
	}
	line := head[:eol]
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		rh.http10 = true
		rh.close = true
	default:
		return errBadResponse{fmt.Sprintf("status line %.40q", line)}
	}
	st := line[len("HTTP/1.1 "):]
	if len(st) < 3 || (len(st) > 3 && st[3] != ' ') || !isDigit(st[0]) || !isDigit(st[1]) || !isDigit(st[2]) || st[0] == '0' || !validFieldValue(st) {
		return errBadResponse{fmt.Sprintf("status line %.40q", line)}
	}
	rh.status = int(st[0]-'0')*100 + int(st[1]-'0')*10 + int(st[2]-'0')
	rh.statusText = st
	for p := head[eol+2:]; len(p) > 2; {
		f, line, rest, ok := nextField(p)
		if !ok {
			return errBadResponse{fmt.Sprintf("header line %.40q", line)}
		}
		p = rest
		value := f.value
		switch f.kind {
		case fContentLength:
			n, ok := parseContentLength(value)
			if !ok || (rh.contentLength >= 0 && rh.contentLength != n) {
				return errBadResponse{fmt.Sprintf("Content-Length %.40q", value)}
			}
			rh.contentLength = n
		case fTransferEncoding:
			if equalFold(value, "chunked") && !rh.chunked && !rh.otherCoding {
				rh.chunked = true
			} else {
				rh.chunked, rh.otherCoding = false, true
			}
		case fConnection:
			for v := value; len(v) > 0; {
				var tok []byte
				tok, v = nextToken(v)
				switch {
				case equalFold(tok, "close"):
					rh.close = true
				case equalFold(tok, "keep-alive") && rh.http10:
					rh.close = false
				case len(tok) > 0:
					rh.dropNames = append(rh.dropNames, tok)
				}
			}
		}
		rh.fields = append(rh.fields, f)
	}
	return nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// forwardResponseField reports whether the app's response field f goes to
// the client: not a hop-by-hop field, not one its Connection header names.
// Transfer-Encoding and Trailer stay, since the body is relayed with the
// app's framing; Content-Length goes when Transfer-Encoding overrides it.
func (rh *respHead) forwardField(f *field) bool {
	switch f.kind {
	case fConnection:
		return false
	case fFallback: // Upgrade and TE are hop-by-hop; Expect means nothing in an answer
		return equalFold(f.name, "expect")
	case fHopByHop:
		return equalFold(f.name, "trailer")
	case fContentLength:
		return !rh.chunked && !rh.otherCoding
	}
	for _, n := range rh.dropNames {
		if bytes.EqualFold(n, f.name) {
			return false
		}
	}
	return true
}

// bodyless reports whether a response to method with rh's status has no
// body whatever its headers say.
func (rh *respHead) bodyless(head bool) bool {
	return head || rh.status == 204 || rh.status == 304 || rh.status < 200
}

// errChunked is malformed chunked framing from the app.
var errChunked = errors.New("proxy: malformed chunked body from the app")

// copyChunked relays a chunked body from src to dst as it is, framing and
// trailers included, and stops after its last line. Each chunk is flushed
// to the client once src has nothing more buffered, so that a stream (SSE,
// a long poll answered in parts) is not held back.
//
// Since the framing is relayed, it is checked before it is written: a
// chunk-size line with a CR or a control byte in its extension, chunk data
// not followed by CRLF, or a trailer that is not a valid header field
// (CR, NUL) ends the copy with errChunked, and the caller cuts the client
// off. net/http's chunked reader refuses the same, or re-chunks and drops
// the extension.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, buf []byte, flush func() error) error {
	for {
		if src.Buffered() == 0 && dst.Buffered() > 0 {
			// The app has sent no more yet: the client gets what there is
			// (the head, the last chunk) before we wait.
			if err := flush(); err != nil {
				return err
			}
		}
		line, err := readLine(src)
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok || !validFieldValue(line[:len(line)-2]) {
			return errChunked
		}
		if _, err := dst.Write(line); err != nil {
			return err
		}
		if size == 0 {
			// Trailers, then the blank line.
			for {
				line, err := readLine(src)
				if err != nil {
					return err
				}
				if len(line) > 2 {
					if _, _, _, ok := nextField(line); !ok {
						return errChunked
					}
				}
				if _, err := dst.Write(line); err != nil {
					return err
				}
				if len(line) == 2 {
					return nil
				}
			}
		}
		if err := copyN(dst, src, size, buf, flush); err != nil {
			return err
		}
		if src.Buffered() < 2 && dst.Buffered() > 0 {
			if err := flush(); err != nil { // the data goes out before we wait for its CRLF
				return err
			}
		}
		end, err := src.Peek(2)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if end[0] != '\r' || end[1] != '\n' {
			return errChunked
		}
		dst.Write(crlf)
		src.Discard(2)
	}
}

// readLine returns the next CRLF-terminated line of src, CRLF included.
// It is valid until the next read.
func readLine(src *bufio.Reader) ([]byte, error) {
	line, err := src.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err == bufio.ErrBufferFull {
			err = errChunked
		}
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errChunked
	}
	return line, nil
}

// chunkSize parses a chunk-size line ("1a;ext=v\r\n").
func chunkSize(line []byte) (int64, bool) {
	line = line[:len(line)-2]
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	return n, true
}

// copyN copies exactly n bytes from src to dst. What src has buffered is
// copied from its buffer; when it runs dry, dst is flushed first (the
// client gets what there is before we wait for more), and large remainders
// are read straight into buf and written through, bypassing both buffers.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64, buf []byte, flush func() error) error {
	for n > 0 {
		if b := src.Buffered(); b > 0 {
			k := int(min(int64(b), n))
			p, _ := src.Peek(k)
			if _, err := dst.Write(p); err != nil {
				return err
			}
			src.Discard(k)
			n -= int64(k)
			continue
		}
		if dst.Buffered() > 0 && flush != nil {
			if err := flush(); err != nil {
				return err
			}
		}
		if n >= int64(src.Size()) && buf != nil {
			// Buffered is 0: Read goes straight to the socket.
			k, err := src.Read(buf[:min(int64(len(buf)), n)])
			if k > 0 {
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return werr
				}
				n -= int64(k)
			}
			if err != nil {
				if err == io.EOF && n > 0 {
					err = io.ErrUnexpectedEOF
				}
				if n > 0 {
					return err
				}
			}
			continue
		}
		if _, err := src.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}
