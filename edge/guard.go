package edge

import "net/http"

// Guard wraps next with the per-connection framing rule of the public
// port: an HTTP/1 request that came with a Transfer-Encoding gets its
// connection closed after the response. A request with both
// Transfer-Encoding and Content-Length is the classic request-smuggling
// shape; net/http frames it by Transfer-Encoding alone (RFC 9112 section
// 6.3), and RFC 9112 section 6.1 then requires closing the connection, so
// that nothing a differently-minded front proxy took for a second request
// is ever read. By the time a handler runs net/http has dropped the
// Content-Length, so this closes after every chunked HTTP/1 request, which
// browsers do not send. (The body limit is each service's:
// proxy.Options.MaxBodyBytes.)
func Guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
