package proxy

import (
	"bufio"
	"context"
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
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

// sniAuthority says a connection covers the hosts listed for its SNI name.
type sniAuthority map[string][]string

func (a sniAuthority) Covers(serverName, host string) bool {
	var set HostMap[struct{}]
	for _, h := range a[serverName] {
		set.Add(h, struct{}{})
	}
	return set.Contains(host)
}

// misdirectedFrontEnd serves two services (a.test, b.test) over TLS
// through a FastServer, with a certificate naming both, and an Authority
// under which a connection made for a.test covers only a.test and one
// made for shared.test covers a.test and b.test (a certificate with two
// names, as browsers coalesce on).
func misdirectedFrontEnd(t *testing.T) (fs *FastServer, addr string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "misdirected test"},
		DNSNames:  []string{"a.test", "b.test", "shared.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}

	handler := func(service string) *Handler {
		app := echoApp(t)
		h := NewHandler(Options{})
		u, err := NewUpstream(service, app.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		h.Route(u)
		t.Cleanup(u.CloseIdleConnections)
		return h
	}
	table, err := NewRouteTable([]Route{
		{Service: "a", Hosts: []string{"a.test"}, Handler: handler("a")},
		{Service: "b", Hosts: []string{"b.test"}, Handler: handler("b")},
	})
	if err != nil {
		t.Fatal(err)
	}
	rt := NewRouter(table, nil, nil)
	rt.SetAuthority(sniAuthority{"a.test": {"a.test"}, "shared.test": {"a.test", "b.test"}})
	fb := &http.Server{Handler: rt, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	fs = &FastServer{Router: rt, Fallback: fb, TLS: true}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go fs.Serve(ln)
	t.Cleanup(func() { ln.Close(); fb.Close(); fs.Close() })
	return fs, ln.Addr().String(), pool
}

// TestMisdirectedOnBothFrontEnds: over TLS, a request whose Host the
// connection's certificate does not cover gets 421 and a closed
// connection on HTTP/1.1, whether the fast path serves it or hands it to
// net/http; on HTTP/2 the 421 leaves the connection serving the host it
// covers (RFC 9110 section 15.5.20: the client retries on a connection of
// its own).
func TestMisdirectedOnBothFrontEnds(t *testing.T) {
	fs, addr, pool := misdirectedFrontEnd(t)
	for _, tc := range []struct {
		name, sni, host string
		chunked         bool // sent chunked, so that net/http serves it
		wantCode        int
		wantFast        bool
	}{
		{"covered", "a.test", "a.test", false, 200, true},
		{"covered, other case and a port", "a.test", "A.Test:443", false, 200, true},
		{"other service's host", "a.test", "b.test", false, 421, true},
		{"other service's host, net/http", "a.test", "b.test", true, 421, false},
		{"a host no route has", "a.test", "c.test", false, 421, true},
		{"both names on the certificate", "shared.test", "b.test", false, 200, true},
		{"no SNI", "", "a.test", false, 421, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: tc.sni, NextProtos: []string{"http/1.1"},
				InsecureSkipVerify: tc.sni == ""})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			raw := "GET /x HTTP/1.1\r\nHost: " + tc.host + "\r\n\r\n"
			if tc.chunked {
				raw = "POST /x HTTP/1.1\r\nHost: " + tc.host + "\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
			}
			before := fs.servedFast.Load()
			io.WriteString(conn, raw)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("%d %q; want %d", resp.StatusCode, body, tc.wantCode)
			}
			if got := fs.servedFast.Load() > before; got != tc.wantFast {
				t.Errorf("served by the fast path: %v; want %v", got, tc.wantFast)
			}
			if tc.wantCode != 421 {
				return
			}
			if strings.TrimSpace(string(body)) != msgMisdirected || !resp.Close {
				t.Errorf("421 body %q, close %v; want %q and the connection closed", body, resp.Close, msgMisdirected)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Error("connection still open after a 421 on HTTP/1.1")
			}
		})
	}

	// HTTP/2: one connection, made for a.test; b.test on it gets 421, and
	// a.test is served on the same connection afterwards.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var reused []bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
	for _, c := range []struct {
		host string
		code int
	}{{"a.test", 200}, {"b.test", 421}, {"a.test", 200}} {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://a.test/h2", nil)
		req.Host = c.host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != c.code {
			t.Fatalf("HTTP/2 Host %s: %s %d %q; want HTTP/2 and %d", c.host, resp.Proto, resp.StatusCode, b, c.code)
		}
		if c.code == 200 {
			var er echoRequest
			if err := json.Unmarshal(b, &er); err != nil {
				t.Fatalf("HTTP/2 Host %s: %q is not the app's echo", c.host, b)
			}
		}
	}
	if len(reused) != 3 || !reused[1] || !reused[2] {
		t.Errorf("connection reused per request: %v; want one connection for all three", reused)
	}
	if got := fs.Router.Misdirected(); got != 5 {
		t.Errorf("Misdirected() = %d; want 5", got)
	}
}

// TestMisdirectedNotOnPlainHTTP: without TLS there is no certificate to
// cover a host, and the Authority is not asked.
func TestMisdirectedNotOnPlainHTTP(t *testing.T) {
	_, fastAddr, refAddr := routedFrontEnds(t, nil)
	for _, addr := range []string{fastAddr, refAddr} {
		resps, _ := exchange(t, addr, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "GET", 1)
		if len(resps) != 1 || resps[0].StatusCode != 200 {
			t.Errorf("%s: %v; want 200", addr, resps)
		}
	}
}

func TestHostMap(t *testing.T) {
	var m HostMap[string]
	for _, p := range []string{"Shop.Example.com.", "*.example.com", "[::1]", "127.0.0.1"} {
		if !m.Add(p, p) {
			t.Fatalf("Add(%q) = false", p)
		}
	}
	if m.Add("shop.example.com", "again") {
		t.Error("Add of a pattern mapped already = true; want the first value kept")
	}
	for host, want := range map[string]string{
		"shop.example.com": "Shop.Example.com.", "SHOP.example.com:443": "Shop.Example.com.", "shop.example.com.": "Shop.Example.com.",
		"a.example.com": "*.example.com", "*.example.com": "*.example.com",
		"example.com": "", "a.b.example.com": "", "[::1]:8443": "[::1]", "127.0.0.1": "127.0.0.1", "": "",
	} {
		got, ok := m.Lookup(host)
		if ok != (want != "") || got != want {
			t.Errorf("Lookup(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
	allocs := testing.AllocsPerRun(100, func() { m.Contains("A.Example.Com:443") })
	if allocs != 0 {
		t.Errorf("Contains allocates %.1f times; want 0", allocs)
	}
}
