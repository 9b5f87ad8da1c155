package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testlog"
)

// selfSigned returns a PEM certificate and key for localhost and 127.0.0.1
// named cn, and the parsed certificate.
func selfSigned(t testing.TB, cn string) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	return selfSignedFor(t, cn, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
}

// selfSignedFor is selfSigned for the given names and addresses.
func selfSignedFor(t testing.TB, cn string, names []string, ips []net.IP) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              names,
		IPAddresses:           ips,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), cert
}

// replaceFile writes b to path the way deployment tools do: a temporary
// file renamed over the old one.
func replaceFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestCertFileReload swaps the certificate files under a running HTTPS
// server: new handshakes get the new certificate, an HTTP/2 connection
// opened before keeps working, and a half-written pair is not picked up.
func TestCertFileReload(t *testing.T) {
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	oldCert, oldKey, oldX := selfSigned(t, "old")
	newCert, newKey, newX := selfSigned(t, "new")
	replaceFile(t, certPath, oldCert)
	replaceFile(t, keyPath, oldKey)

	cf, err := NewCertFile(certPath, keyPath, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}), cf.TLSConfig(), Limits{}, testlog.New(t))
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cf.Watch(ctx, 10*time.Millisecond)

	roots := x509.NewCertPool()
	roots.AddCert(oldX)
	roots.AddCert(newX)
	url := "https://" + ln.Addr().String() + "/"
	newClient := func() *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
		}}
	}
	// served does a request on c and returns the certificate its
	// connection was made with.
	served := func(c *http.Client) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if string(body) != "HTTP/2.0" {
			t.Errorf("body = %q; want HTTP/2.0", body)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}

	open := newClient() // its one HTTP/2 connection stays open throughout
	if got := served(open); got != "old" {
		t.Fatalf("first handshake got certificate %q; want old", got)
	}

	// Only the certificate replaced: it does not match the key, so the old
	// pair stays in use.
	replaceFile(t, certPath, newCert)
	time.Sleep(50 * time.Millisecond) // several polls
	if _, err := cf.Reload(); err == nil {
		t.Fatal("Reload of a certificate with the old key succeeded; want an error")
	}
	if got := served(newClient()); got != "old" {
		t.Fatalf("after a half-written update a new handshake got %q; want old", got)
	}

	replaceFile(t, keyPath, newKey)
	deadline := time.Now().Add(5 * time.Second)
	for served(newClient()) != "new" {
		if time.Now().After(deadline) {
			t.Fatal("new handshakes still get the old certificate 5s after the files changed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := served(open); got != "old" {
		t.Errorf("connection opened before the swap: certificate %q; want old (same connection, still working)", got)
	}
	if got := cf.Leaf().Subject.CommonName; got != "new" {
		t.Errorf("Leaf() = %q; want new", got)
	}
}

func TestNewCertFileErrors(t *testing.T) {
	dir := t.TempDir()
	certPEM, _, _ := selfSigned(t, "a")
	_, otherKey, _ := selfSigned(t, "b")
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	replaceFile(t, certPath, certPEM)
	replaceFile(t, keyPath, otherKey)
	if _, err := NewCertFile(certPath, keyPath, nil); err == nil {
		t.Error("NewCertFile with a key that does not match succeeded")
	}
	if _, err := NewCertFile(filepath.Join(dir, "missing.pem"), keyPath, nil); err == nil {
		t.Error("NewCertFile with a missing file succeeded")
	}
}
