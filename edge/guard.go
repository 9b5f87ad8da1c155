package edge

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
)

// Guard wraps next with the per-request limits of the public port:
//
//   - A request body larger than maxBodyBytes is refused with 413 Request
//     Entity Too Large. A declared Content-Length over the limit is refused
//     before anything reaches the app; a body of unknown length (chunked, or
//     HTTP/2 without content-length) is cut when it passes the limit, and the
//     502 the proxy would then answer becomes a 413. Zero or negative means
//     no limit.
//   - An HTTP/1 request that came with a Transfer-Encoding gets its
//     connection closed after the response. A request with both
//     Transfer-Encoding and Content-Length is the classic request-smuggling
//     shape; net/http frames it by Transfer-Encoding alone (RFC 9112 section
//     6.3), and RFC 9112 section 6.1 then requires closing the connection, so
//     that nothing a differently-minded front proxy took for a second request
//     is ever read. By the time a handler runs net/http has dropped the
//     Content-Length, so this closes after every chunked HTTP/1 request,
//     which browsers do not send.
//
// The ResponseWriter handed to next unwraps (http.ResponseController) to
// the server's, so Flush and Hijack work through it.
func Guard(next http.Handler, maxBodyBytes int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		if maxBodyBytes <= 0 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > maxBodyBytes {
			// Do not read the body just to throw it away.
			w.Header().Set("Connection", "close")
			http.Error(w, tooLargeMessage(maxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		if r.ContentLength > 0 {
			// net/http (HTTP/1 and HTTP/2) never delivers more body than
			// the declared length.
			next.ServeHTTP(w, r)
			return
		}
		body := &limitedBody{ReadCloser: r.Body, limit: maxBodyBytes, left: maxBodyBytes}
		r.Body = body
		next.ServeHTTP(&limitWriter{ResponseWriter: w, body: body}, r)
	})
}

func tooLargeMessage(limit int64) string {
	return fmt.Sprintf("413 Request Entity Too Large: the body is over %d bytes", limit)
}

// limitedBody fails reads past limit with *http.MaxBytesError and remembers
// that it did. Read runs on the proxy transport's goroutine; exceeded is read
// on the handler's.
type limitedBody struct {
	io.ReadCloser
	limit, left int64
	exceeded    atomic.Bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.exceeded.Load() {
		return 0, &http.MaxBytesError{Limit: b.limit}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte more than allowed tells "over" from "exactly at"
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = 0
		b.exceeded.Store(true)
		return n, &http.MaxBytesError{Limit: b.limit}
	}
	b.left -= int64(n)
	return n, err
}

// limitWriter turns the proxy's error response into a 413 when the reason it
// failed is that limitedBody cut the request body.
type limitWriter struct {
	http.ResponseWriter
	body     *limitedBody
	replaced bool
}

func (w *limitWriter) WriteHeader(code int) {
	if code >= 500 && w.body.exceeded.Load() {
		w.replaced = true
		h := w.ResponseWriter.Header()
		h.Set("Connection", "close")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.ResponseWriter.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w.ResponseWriter, tooLargeMessage(w.body.limit)+"\n")
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.replaced {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
