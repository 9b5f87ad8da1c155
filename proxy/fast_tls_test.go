package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// selfSigned returns a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fast path test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsFrontEnd starts a FastServer in TLS mode in front of app, the way
// baton serve runs its HTTPS port, and returns it with a client maker:
// h2 chooses whether the client offers HTTP/2.
func tlsFrontEnd(t *testing.T, appAddr string, opts Options) (*FastServer, string, func(h2 bool) *http.Client) {
	t.Helper()
	cert, pool := selfSigned(t)
	h := NewHandler(opts)
	u, err := NewUpstream("blue", appAddr)
	if err != nil {
		t.Fatal(err)
	}
	h.Route(u)
	fb := &http.Server{Handler: h, ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	fs := &FastServer{Router: SingleRoute(h), Fallback: fb, TLS: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fs.Serve(ln)
	t.Cleanup(func() { ln.Close(); fb.Close(); fs.Close(); u.CloseIdleConnections() })
	client := func(h2 bool) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // HTTP/1.1 only
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}
	}
	return fs, "https://" + ln.Addr().String(), client
}

func echoed(t *testing.T, resp *http.Response) echoRequest {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var er echoRequest
	if err := json.Unmarshal(b, &er); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return er
}

func TestFastPathTLS(t *testing.T) {
	app := echoApp(t)
	fs, base, client := tlsFrontEnd(t, app.Listener.Addr().String(), Options{})

	// HTTPS/1.1: served by the fast path, and the app learns it was HTTPS.
	c1 := client(false)
	for i := range 3 {
		resp, err := c1.Get(base + "/one?x=1")
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 1 || resp.TLS == nil {
			t.Fatalf("answer over %s, TLS %v; want HTTP/1.1 over TLS", resp.Proto, resp.TLS != nil)
		}
		er := echoed(t, resp)
		if got := er.Header.Get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("request %d: app saw X-Forwarded-Proto %q, want https", i, got)
		}
	}
	if n := fs.servedFast.Load(); n != 3 {
		t.Errorf("fast path served %d HTTPS/1.1 requests, want 3", n)
	}
	if n := fs.handedOff.Load(); n != 0 {
		t.Errorf("%d connections handed over for plain HTTPS/1.1 GETs, want 0", n)
	}

	// A chunked upload on HTTPS/1.1 goes to net/http, which must still
	// know the connection is TLS.
	req, _ := http.NewRequest(http.MethodPost, base+"/up", io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body")))
	req.ContentLength = -1
	resp, err := c1.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	er := echoed(t, resp)
	if er.Body != "chunked body" || er.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("chunked upload over HTTPS/1.1: app saw body %q, X-Forwarded-Proto %q; want the body and https", er.Body, er.Header.Get("X-Forwarded-Proto"))
	}
	if n := fs.handedOff.Load(); n != 1 {
		t.Errorf("handed over %d connections after a chunked upload, want 1", n)
	}

	// HTTP/2: negotiated through ALPN and served by net/http.
	served := fs.servedFast.Load()
	resp, err = client(true).Get(base + "/two")
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("answer over %s, want HTTP/2", resp.Proto)
	}
	if er := echoed(t, resp); er.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("HTTP/2: app saw X-Forwarded-Proto %q, want https", er.Header.Get("X-Forwarded-Proto"))
	}
	if fs.servedFast.Load() != served || fs.handedOff.Load() != 2 {
		t.Errorf("HTTP/2 request: fast path served %d more, handed over %d connections in all; want 0 more and 2",
			fs.servedFast.Load()-served, fs.handedOff.Load())
	}
}

// TestFastPathTLSTrustedProxyProto: behind a TLS-terminating proxy that is
// trusted, its X-Forwarded-Proto wins; otherwise baton's own view (https).
func TestFastPathTLSTrustedProxyProto(t *testing.T) {
	app := echoApp(t)
	_, base, client := tlsFrontEnd(t, app.Listener.Addr().String(), Options{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Header.Set("X-Forwarded-Proto", "http")
	resp, err := client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := echoed(t, resp).Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("trusted peer said http; app saw %q", got)
	}
}

// TestFastPathTLSHandshakeTimeout: a client that connects and never starts
// the handshake is dropped after ReadHeaderTimeout, as by net/http.
func TestFastPathTLSHandshakeTimeout(t *testing.T) {
	app := echoApp(t)
	_, base, _ := tlsFrontEnd(t, app.Listener.Addr().String(), Options{})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err == nil {
		t.Fatal("the server sent something to a client that never said hello")
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection was still open after 5 s; want it closed after the 300 ms ReadHeaderTimeout")
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Errorf("closed after %s, before the 300 ms ReadHeaderTimeout", took)
	}
}
