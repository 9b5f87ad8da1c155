package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testlog"
)

// writePair writes a self-signed certificate for names into dir and
// returns its pair and the parsed certificate.
func writePair(t *testing.T, dir, file string, names []string, ips ...net.IP) (CertPair, *x509.Certificate) {
	t.Helper()
	certPEM, keyPEM, cert := selfSignedFor(t, file, names, ips)
	p := CertPair{Cert: filepath.Join(dir, file+".crt"), Key: filepath.Join(dir, file+".key")}
	replaceFile(t, p.Key, keyPEM)
	replaceFile(t, p.Cert, certPEM)
	return p, cert
}

// served returns the serial of the certificate a handshake asking for sni
// gets, or "" if it gets none.
func served(t *testing.T, c *Certs, sni string) string {
	t.Helper()
	cert, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: sni})
	if err != nil || cert == nil {
		return ""
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

// TestCertsChooseBySNI: each handshake gets the certificate naming its SNI
// (exactly, else by wildcard, else the default), and a request is covered
// only by the certificate chosen for its connection.
func TestCertsChooseBySNI(t *testing.T) {
	dir := t.TempDir()
	shop, shopX := writePair(t, dir, "shop", []string{"shop.test", "www.shop.test"})
	api, apiX := writePair(t, dir, "api", []string{"api.test"})
	tenants, tenantsX := writePair(t, dir, "tenants", []string{"*.tenants.test", "api.test"})
	def, defX := writePair(t, dir, "default", []string{"default.test"}, net.IPv4(127, 0, 0, 1))
	c := NewCerts(nil, testlog.New(t))
	if served(t, c, "shop.test") != "" || c.Covers("shop.test", "shop.test") {
		t.Fatal("serves a certificate before Commit")
	}
	u, err := c.Prepare(CertsConfig{
		Files:   []CertPair{shop, api, tenants},
		Default: def,
	})
	if err != nil {
		t.Fatal(err)
	}
	if served(t, c, "shop.test") != "" {
		t.Fatal("Prepare changed what is served")
	}
	if err := u.Commit(); err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]*x509.Certificate{
		"shop.test": shopX, "WWW.Shop.Test": shopX, "api.test": apiX, // api's exactly, though tenants names it too, later
		"a.tenants.test": tenantsX, "a.b.tenants.test": defX, "tenants.test": defX,
		"other.test": defX, "": defX, "default.test": defX,
	} {
		if got := served(t, c, sni); got != want.SerialNumber.String() {
			t.Errorf("SNI %q got the certificate of %s; want %s's", sni, nameOf(got, shopX, apiX, tenantsX, defX), want.Subject.CommonName)
		}
	}
	for _, tc := range []struct {
		sni, host string
		want      bool
	}{
		{"shop.test", "shop.test", true},
		{"shop.test", "www.shop.test:443", true},
		{"shop.test", "api.test", false}, // api has a certificate, but not this connection's
		{"a.tenants.test", "b.tenants.test", true},
		{"a.tenants.test", "api.test", true}, // tenants' certificate names it: a coalescing browser may ask
		{"", "127.0.0.1:8443", true},
		{"", "shop.test", false},
		{"nobody.test", "nobody.test", false},
	} {
		if got := c.Covers(tc.sni, tc.host); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v; want %v", tc.sni, tc.host, got, tc.want)
		}
	}

	// Without a default, the first file is it.
	u, err = c.Prepare(CertsConfig{Files: []CertPair{api, shop}})
	if err != nil {
		t.Fatal(err)
	}
	u.Commit()
	if got := served(t, c, "other.test"); got != apiX.SerialNumber.String() {
		t.Errorf("no default: unknown SNI got %s; want the first file's (api)", nameOf(got, shopX, apiX, tenantsX, defX))
	}
}

func nameOf(serial string, certs ...*x509.Certificate) string {
	for _, c := range certs {
		if c.SerialNumber.String() == serial {
			return c.Subject.CommonName
		}
	}
	return "none"
}

// TestCertsPrepareRefuses: a certificate that misses one of its service's
// hosts, or that does not load, is refused with every problem named, and
// what is served does not change.
func TestCertsPrepareRefuses(t *testing.T) {
	dir := t.TempDir()
	shop, shopX := writePair(t, dir, "shop", []string{"shop.test", "*.shop.test"})
	c := NewCerts(nil, nil)
	good := shop
	good.Hosts, good.Label = []string{"shop.test", "a.shop.test", "*.shop.test"}, "service shop"
	u, err := c.Prepare(CertsConfig{Files: []CertPair{good}})
	if err != nil {
		t.Fatal(err)
	}
	u.Commit()

	bad := shop
	bad.Hosts, bad.Label = []string{"shop.test", "a.b.shop.test", "*.test"}, "service shop"
	missing := CertPair{Cert: filepath.Join(dir, "nope.crt"), Key: filepath.Join(dir, "nope.key"), Label: "service api"}
	_, err = c.Prepare(CertsConfig{Files: []CertPair{bad, missing}, ACMEDomains: []string{"x.test"}})
	if err == nil {
		t.Fatal("Prepare accepted a certificate missing hosts and a missing file")
	}
	for _, want := range []string{
		"service shop: certificate " + shop.Cert + " does not cover host a.b.shop.test (it names shop.test, *.shop.test)",
		"service shop: certificate " + shop.Cert + " does not cover host *.test",
		"service api: tls certificate: stat " + missing.Cert,
		"acme domains given, but baton runs without ACME",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if got := served(t, c, "shop.test"); got != shopX.SerialNumber.String() {
		t.Error("a refused Prepare changed what is served")
	}
}

// TestCertsWatchRechoosesByNewNames: a certificate file replaced by one
// with other names is chosen by those from the next handshake on.
func TestCertsWatchRechoosesByNewNames(t *testing.T) {
	dir := t.TempDir()
	a, aX := writePair(t, dir, "a", []string{"a.test"})
	b, _ := writePair(t, dir, "b", []string{"b.test"})
	c := NewCerts(nil, testlog.New(t))
	u, err := c.Prepare(CertsConfig{Files: []CertPair{b, a}})
	if err != nil {
		t.Fatal(err)
	}
	u.Commit()
	if c.Covers("a.test", "new.test") {
		t.Fatal("covers a name before the file holds it")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Watch(ctx, 10*time.Millisecond)

	certPEM, keyPEM, newX := selfSignedFor(t, "a2", []string{"a.test", "new.test"}, nil)
	os.WriteFile(a.Key, keyPEM, 0o600)
	os.WriteFile(a.Cert, certPEM, 0o600)
	for deadline := time.Now().Add(5 * time.Second); served(t, c, "new.test") != newX.SerialNumber.String(); {
		if time.Now().After(deadline) {
			t.Fatalf("new.test still gets %s after the file changed", nameOf(served(t, c, "new.test"), aX, newX))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !c.Covers("a.test", "new.test") || !c.Covers("new.test", "a.test") {
		t.Error("the new certificate's names are not covered")
	}
}
