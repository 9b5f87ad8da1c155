package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// TestScreen feeds connections' worth of requests through a screen, whole
// and a byte at a time, and checks that it passes every byte unchanged
// except a head with faulty framing at a request boundary, which it
// replaces (and stops there).
func TestScreen(t *testing.T) {
	fakeHead := "GET /in-body HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
	faulty := "POST /x HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
	get := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	put := "PUT / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
	post := "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
	cases := []struct {
		name, in string
		kept     int // bytes passed before the replacement; -1: all, nothing replaced
	}{
		{"plain requests", get + get, -1},
		{"a faulty-looking head inside a body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + strconv.Itoa(len(fakeHead)) + "\r\n\r\n" + fakeHead + get, -1},
		{"duplicate equal Content-Lengths", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc" + get, -1},
		{"after a chunked request: not framed, passed", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + faulty, -1},
		{"after an upgrade: not HTTP, passed", "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n" + faulty, -1},
		{"Transfer-Encoding folded into another field", "GET / HTTP/1.0\r\nX: a\r\n Transfer-Encoding: chunked\r\n\r\n" + get, -1},
		{"HTTP/1.1 with Transfer-Encoding", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", -1},
		{"HTTP/0.9", "GET /\r\n", -1},
		{"faulty first", faulty + get, 0},
		{"faulty after a request", get + faulty, len(get)},
		{"faulty after a body", put + faulty, len(put)},
		// The CRLF net/http would skip goes with the replaced head.
		{"faulty after a POST and a CRLF", post + "\r\n" + faulty, len(post)},
		{"faulty with bare LF lines", "GET / HTTP/1.0\nTransfer-Encoding: chunked\n\n", 0},
		{"faulty without Content-Length", "GET / HTTP/1.0\r\ntransfer-encoding: x\r\n\r\n", 0},
	}
	for _, tc := range cases {
		want := tc.in
		if tc.kept >= 0 {
			want = tc.in[:tc.kept] + faultyFramingLine
		}
		for _, oneByte := range []bool{false, true} {
			var src io.Reader = strings.NewReader(tc.in)
			if oneByte {
				src = iotest.OneByteReader(src)
			}
			s := &screen{src: src, limit: screenLimit(0)}
			var r io.Reader = s
			if oneByte {
				r = iotest.OneByteReader(s)
			}
			got, err := readScreened(r, tc.kept >= 0, len(want))
			if err != nil {
				t.Errorf("%s (one byte at a time: %v): %v", tc.name, oneByte, err)
			}
			if got != want {
				t.Errorf("%s (one byte at a time: %v):\n got %q\nwant %q", tc.name, oneByte, got, want)
			}
		}
	}
}

// readScreened reads r to its end, or, after a replacement (which leaves
// the screen waiting on its source), n bytes.
func readScreened(r io.Reader, replaced bool, n int) (string, error) {
	if replaced {
		b := make([]byte, n)
		_, err := io.ReadFull(r, b)
		return string(b), err
	}
	var buf bytes.Buffer
	_, err := io.Copy(&buf, r)
	return buf.String(), err
}

// FuzzScreen holds the screen to net/http's framing: it passes every byte
// unchanged, or replaces a head that starts exactly where net/http, reading
// the same bytes as a server does, would read its next request (never
// inside a body), and that request is HTTP/1.0 or one net/http refuses.
func FuzzScreen(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\nPOST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde\r\nGET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n",
		"PUT / HTTP/1.0\r\nContent-Length: 40\r\n\r\nGET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n",
		"GET / HTTP/1.0\nX: a\n Transfer-Encoding: chunked\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &screen{src: bytes.NewReader(in), limit: screenLimit(0)}
		out, _ := io.ReadAll(io.LimitReader(s, int64(len(in)+len(faultyFramingLine))))
		if !s.refused {
			if !bytes.Equal(out, in) {
				t.Fatalf("screen changed %q into %q", in, out)
			}
			return
		}
		k := len(out) - len(faultyFramingLine)
		if k < 0 || !bytes.Equal(out[:k], in[:k]) || string(out[k:]) != faultyFramingLine {
			t.Fatalf("screen turned %q into %q", in, out)
		}
		// Read in as net/http's server does, up to offset k.
		cr := &countingReader{r: bytes.NewReader(in)}
		br := bufio.NewReader(cr)
		lastPOST := false
		for {
			consumed := cr.n - br.Buffered()
			if consumed > k {
				t.Fatalf("screen refused %q at %d, inside a request net/http read up to %d", in, k, consumed)
			}
			if lastPOST {
				peek, _ := br.Peek(4)
				n := 0
				for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
					n++
				}
				br.Discard(n)
			}
			req, err := http.ReadRequest(br)
			if consumed == k {
				if err == nil && req.ProtoMinor != 0 {
					t.Fatalf("screen refused %q at %d; net/http reads %s %s %s there", in, k, req.Method, req.RequestURI, req.Proto)
				}
				return
			}
			if err != nil || len(req.TransferEncoding) > 0 || req.Header.Get("Upgrade") != "" || req.Method == http.MethodConnect {
				return // net/http closes the connection here, or what follows is not HTTP
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			lastPOST = req.Method == http.MethodPost
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
