package proxy

import (
	"bytes"
	"io"
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
