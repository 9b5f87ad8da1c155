// Package edge is what stands between the internet and baton's proxy: the
// listening sockets, TLS (automatic certificates from an ACME CA through
// certmagic, or a certificate the operator brings and replaces on disk), the
// plain-HTTP port that redirects to HTTPS while letting ACME HTTP-01
// challenges through, and the limits that keep hostile clients from holding
// connections or memory.
//
// The model: Listen opens every socket baton serves on, in one place, so that
// a later upgrade of baton itself can hand them to a new process. NewServer
// turns a handler into an http.Server with timeouts chosen to stop slowloris
// clients without cutting slow downloads. A certificate source (ACME or
// CertFile) supplies GetCertificate for the HTTPS server's tls.Config, which
// also offers HTTP/2. Guard wraps the proxy with per-request limits (body
// size, connection close after chunked HTTP/1 requests), and Redirect is the
// handler of the plain-HTTP port when TLS is on.
//
// The proxy itself (package proxy) knows nothing of this package; the command
// wires the two together.
package edge
