package proxy

import (
	"fmt"
	"io"
	"net/http"
)

// The body limit (Options.MaxBodyBytes), one rule on both front ends: a
// request whose declared Content-Length is over the limit is answered 413
// Request Entity Too Large before anything reaches the app, and its
// connection is closed rather than its body read. A body of unknown length
// (chunked, or HTTP/2 without content-length; only net/http serves those)
// is cut when it passes the limit, and answered 413 (Handler.failure).

// bodyTooLarge reports whether a request declaring contentLength bytes of
// body is refused.
func (h *Handler) bodyTooLarge(contentLength int64) bool {
	return h.maxBody > 0 && contentLength > h.maxBody
}

func tooLargeMessage(limit int64) string {
	return fmt.Sprintf("413 Request Entity Too Large: the body is over %d bytes", limit)
}

// limitBody applies the body limit to a net/http request. It returns the
// writer and request to go on with, or false when it answered 413 itself.
func (h *Handler) limitBody(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, bool) {
	if h.maxBody <= 0 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return w, r, true
	}
	if h.bodyTooLarge(r.ContentLength) {
		// Do not read the body just to throw it away.
		w.Header().Set("Connection", "close")
		http.Error(w, h.tooLarge, http.StatusRequestEntityTooLarge)
		return w, r, false
	}
	if r.ContentLength > 0 {
		// net/http (HTTP/1 and HTTP/2) never delivers more body than the
		// declared length.
		return w, r, true
	}
	// A body of unknown length: cut at the limit, which the transport
	// reports as a bodyError around *http.MaxBytesError, and
	// Handler.failure answers 413.
	r2 := *r // a shallow copy: the caller's request keeps its body
	r2.Body = &limitedBody{ReadCloser: r.Body, limit: h.maxBody, left: h.maxBody}
	return w, &r2, true
}

// limitedBody fails reads past limit with *http.MaxBytesError.
type limitedBody struct {
	io.ReadCloser
	limit, left int64
	exceeded    bool
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.exceeded {
		return 0, &http.MaxBytesError{Limit: b.limit}
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte more than allowed tells "over" from "exactly at"
	}
	n, err := b.ReadCloser.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = 0
		b.exceeded = true
		return n, &http.MaxBytesError{Limit: b.limit}
	}
	b.left -= int64(n)
	return n, err
}
