package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/internal/certtest"
	"github.com/batonproxy/baton/internal/pebbletest"
)

// writeCert writes a self-signed certificate for names: certtest.Write.
func writeCert(t *testing.T, dir, name string, names ...string) (certPath, keyPath string, cert *x509.Certificate) {
	t.Helper()
	return certtest.Write(t, dir, name, names...)
}

// httpsClient returns a client whose connections all go to baton's HTTPS
// listener whatever the URL's host, trusting roots, over HTTP/2 (h2) or
// HTTP/1.1.
func httpsClient(t *testing.T, b *runningBaton, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, b.lns.HTTPS.Addr().String())
		}}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// httpsGet sends GET https://SNI/path with the given Host header and
// returns the status, the body and the serial of the certificate served.
func httpsGet(t *testing.T, c *http.Client, sni, host, path string) (int, string, *big.Int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://"+sni+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET https://%s%s (Host %s): %v", sni, path, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), resp.TLS.PeerCertificates[0].SerialNumber
}

// TestServeServiceCertificates: services with certificates of their own
// (tls_cert, tls_key) and a default one (tls_cert at the top level). The
// SNI name picks the certificate and the Host the service; a Host the
// connection's certificate does not cover gets 421, over HTTP/1.1 and
// HTTP/2. A reload that gives a service a new certificate serves it from
// the next handshake without rebuilding the service; one whose
// certificate does not cover its service's hosts changes nothing and
// names the file and line.
func TestServeServiceCertificates(t *testing.T) {
	dir := t.TempDir()
	shop, api, other := newPair(t, "shop"), newPair(t, "api"), newPair(t, "other")
	shopCert, shopKey, shopLeaf := writeCert(t, dir, "shop", "shop.test", "www.shop.test")
	apiCert, apiKey, apiLeaf := writeCert(t, dir, "api", "api.test")
	defCert, defKey, defLeaf := writeCert(t, dir, "default", "localhost", "127.0.0.1")
	roots := x509.NewCertPool()
	for _, c := range []*x509.Certificate{shopLeaf, apiLeaf, defLeaf} {
		roots.AddCert(c)
	}
	file := filepath.Join(dir, "baton.yaml")
	write := func(apiCert, apiKey string) {
		body := fmt.Sprintf(`https: 127.0.0.1:0
tls_cert: %s
tls_key: %s
no_stop: true
health_passes: 1
health_interval: 20ms
services:
  shop:
    hosts: [shop.test, www.shop.test]
    tls_cert: %s
    tls_key: %s
%s  api:
    hosts: [api.test]
    tls_cert: %s
    tls_key: %s
%s  other:
%s`, defCert, defKey, shopCert, shopKey, shop.yaml(""), apiCert, apiKey, api.yaml(""), other.yaml(""))
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(apiCert, apiKey)
	b := startServeArgs(t, "--config", file)

	for _, h2 := range []bool{false, true} {
		c := httpsClient(t, b, roots, h2)
		for _, tc := range []struct {
			sni, host string
			code      int
			body      string
			cert      *x509.Certificate
		}{
			{"shop.test", "shop.test", 200, "shop-blue /x", shopLeaf},
			{"www.shop.test", "WWW.Shop.Test:443", 200, "shop-blue /x", shopLeaf},
			{"api.test", "api.test", 200, "api-blue /x", apiLeaf},
			{"localhost", "localhost", 200, "other-blue /x", defLeaf}, // the default service, on the default certificate
			{"127.0.0.1", "127.0.0.1", 200, "other-blue /x", defLeaf}, // no SNI (an IP address): the default certificate
			{"shop.test", "api.test", 421, msgMisdirectedPrefix, shopLeaf},
			{"api.test", "www.shop.test", 421, msgMisdirectedPrefix, apiLeaf},
			{"127.0.0.1", "unknown.test", 421, msgMisdirectedPrefix, defLeaf},
		} {
			code, body, serial := httpsGet(t, c, tc.sni, tc.host, "/x")
			if code != tc.code || !strings.HasPrefix(body, tc.body) || serial.Cmp(tc.cert.SerialNumber) != 0 {
				t.Errorf("h2 %v, SNI %s, Host %s: %d %q from certificate %s; want %d %q from %s",
					h2, tc.sni, tc.host, code, body, serial, tc.code, tc.body, tc.cert.Subject.CommonName)
			}
		}
	}

	// A new certificate for api, at another path: served from the next
	// handshake on; no service is rebuilt for it, so a keep-alive
	// connection to shop stays open across the reload.
	keep := httpsClient(t, b, roots, false)
	var conns int
	keep.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		conns++
		return (&net.Dialer{}).DialContext(ctx, network, b.lns.HTTPS.Addr().String())
	}
	httpsGet(t, keep, "shop.test", "shop.test", "/before")
	apiCert2, apiKey2, apiLeaf2 := writeCert(t, dir, "api2", "api.test")
	roots.AddCert(apiLeaf2)
	write(apiCert2, apiKey2)
	code, out := adminPost(t, b, "/v1/reload", `{}`)
	var rep admin.ReloadResponse
	json.Unmarshal([]byte(out), &rep)
	if code != 200 || len(rep.Changed) != 0 || len(rep.Unchanged) != 3 {
		t.Fatalf("reload with a new certificate for api: %d %s; want every service unchanged", code, out)
	}
	fresh := httpsClient(t, b, roots, false)
	if code, body, serial := httpsGet(t, fresh, "api.test", "api.test", "/x"); code != 200 || body != "api-blue /x" || serial.Cmp(apiLeaf2.SerialNumber) != 0 {
		t.Errorf("api after the reload: %d %q from certificate %s; want api's answer from the new certificate %s", code, body, serial, apiLeaf2.SerialNumber)
	}
	if code, body, _ := httpsGet(t, keep, "shop.test", "shop.test", "/after"); code != 200 || body != "shop-blue /after" || conns != 1 {
		t.Errorf("shop on a connection opened before the reload: %d %q, %d connections; want its answer on the same connection", code, body, conns)
	}

	// api given shop's certificate, which does not cover api.test: the
	// reload is refused, naming the service's line, and the certificate
	// served stays the one before.
	write(shopCert, shopKey)
	code, out = adminPost(t, b, "/v1/reload", `{}`)
	if want := file + ":14: service api: certificate " + shopCert + " does not cover host api.test"; code != 400 || !strings.Contains(out, want) {
		t.Errorf("reload with a certificate that misses the service's host: %d %s; want 400 with %q", code, out, want)
	}
	fresh.CloseIdleConnections()
	if _, _, serial := httpsGet(t, fresh, "api.test", "api.test", "/x"); serial.Cmp(apiLeaf2.SerialNumber) != 0 {
		t.Errorf("after a refused reload api's certificate is %s; want %s still", serial, apiLeaf2.SerialNumber)
	}
}

// msgMisdirectedPrefix is how the 421's body starts.
const msgMisdirectedPrefix = "421 Misdirected Request"

// TestServeCertificateProblems: certificate settings that cannot work are
// refused at start with their line: a wildcard host with ACME, a
// service's tls_cert without its key, a service's certificate with baton
// in plain-HTTP-only mode.
func TestServeCertificateProblems(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		body string
		want []string
	}{
		"wildcard with acme": {`acme: true
services:
  a:
    hosts: ["*.shop.test", shop.test]
    blue: 127.0.0.1:1
    green: 127.0.0.1:2
  b:
    hosts: ["*.api.test"]
    tls_cert: b.crt
    tls_key: b.key
    blue: 127.0.0.1:3
    green: 127.0.0.1:4
`, []string{":4: service a: host *.shop.test: acme cannot get a wildcard certificate"}},
		"cert without key": {`services:
  a:
    hosts: [shop.test]
    tls_cert: a.crt
    blue: 127.0.0.1:1
    green: 127.0.0.1:2
`, []string{":2: service a: tls_cert and tls_key go together"}},
		"http only": {`http_only: true
services:
  a:
    tls_cert: a.crt
    tls_key: a.key
`, []string{"--http-only cannot be combined"}},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			os.WriteFile(path, []byte(c.body), 0o600)
			_, err := checkConfigFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "api.test") {
				t.Errorf("a wildcard host with a certificate of its own was refused:\n%v", err)
			}
		})
	}
}

// TestServeACMEForEveryService runs 'baton serve --config' with acme: true
// against Pebble: certificates for the hosts of two services are obtained
// without naming them again, each served for its name and reaching its
// service; a reload that adds a service with a new host gets that host's
// certificate without a restart.
func TestServeACMEForEveryService(t *testing.T) {
	peb, httpPort, tlsPort := pebbletest.StartForBaton(t)
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "pebble-api-root.pem")
	if err := os.WriteFile(rootFile, peb.APIRootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	shop, api, blog := newPair(t, "shop"), newPair(t, "api"), newPair(t, "blog")
	file := filepath.Join(dir, "baton.yaml")
	head := fmt.Sprintf(`http: 127.0.0.1:%d
https: 127.0.0.1:%d
acme: true
acme_ca: %s
acme_ca_root: %s
acme_email: ops@baton.test
no_stop: true
health_passes: 1
health_interval: 20ms
services:
  shop:
    hosts: [shop.baton.test]
%s  api:
    hosts: [api.baton.test]
%s`, httpPort, tlsPort, peb.DirectoryURL, rootFile, shop.yaml(""), api.yaml(""))
	os.WriteFile(file, []byte(head), 0o600)
	b := startServeArgs(t, "--config", file, "--http", fmt.Sprintf("127.0.0.1:%d", httpPort))

	roots, _ := peb.IssuerRoots(t)
	client := httpsClient(t, b, roots, true)
	waitCert := func(host, want string) {
		t.Helper()
		var lastErr error
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			resp, err := client.Get("https://" + host + "/x")
			if err != nil {
				lastErr = err
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := resp.TLS.PeerCertificates[0].DNSNames; resp.StatusCode != 200 || string(body) != want || !slices.Equal(got, []string{host}) {
				t.Fatalf("GET https://%s/x: %d %q from a certificate for %q; want %q from one for %s", host, resp.StatusCode, body, got, want, host)
			}
			return
		}
		t.Fatalf("no certificate for %s from pebble within 60s; last error: %v", host, lastErr)
	}
	waitCert("shop.baton.test", "shop-blue /x")
	waitCert("api.baton.test", "api-blue /x")

	os.WriteFile(file, []byte(head+"  blog:\n    hosts: [blog.baton.test]\n"+blog.yaml("")), 0o600)
	if code, out := adminPost(t, b, "/v1/reload", `{}`); code != 200 || !strings.Contains(out, `"blog"`) {
		t.Fatalf("reload adding blog: %d %s", code, out)
	}
	waitCert("blog.baton.test", "blog-blue /x")
}
