// Package pebbletest runs Pebble, Let's Encrypt's test ACME server, on
// loopback for tests, with real challenge validation.
//
// Pebble validates HTTP-01 and TLS-ALPN-01 challenges by resolving the
// domain and connecting to it on the ports given in its config. Start gives
// it a DNS server of its own (in this process) that answers 127.0.0.1 for
// every name, and the caller's HTTP and HTTPS ports, so the validation
// requests land on the server under test: no PEBBLE_VA_ALWAYS_VALID, nothing
// is faked but DNS. PEBBLE_VA_NOSLEEP=1 removes Pebble's random delay before
// validating and PEBBLE_WFE_NONCEREJECT=0 its deliberate bad-nonce errors,
// which keeps the test fast and deterministic.
//
// Pebble itself is an external binary: `go install
// github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1` (see
// .ci/install-pebble.sh). Start fails the test when it is missing.
// BATON_SKIP_PEBBLE=1 skips the test instead, installed or not.
package pebbletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"go/build"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/batonproxy/baton/internal/syncbuf"
)

// SkipEnv is the environment variable that, set to 1, makes Start skip the
// test (the explicit opt-out) instead of running pebble or failing for want
// of it.
const SkipEnv = "BATON_SKIP_PEBBLE"

// Pebble is a running Pebble server.
type Pebble struct {
	// DirectoryURL is the ACME directory to give the client.
	DirectoryURL string
	// APIRoots trusts the certificate of Pebble's own HTTPS API (made by
	// Start); give it to the ACME client.
	APIRoots *x509.CertPool
	// APIRootPEM is APIRoots as a PEM file's contents.
	APIRootPEM []byte

	mgmtURL string
	out     *syncbuf.Buffer
}

// Path returns the pebble binary: on $PATH, else in $GOPATH/bin (where go
// install puts it), else "".
func Path() string {
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	for _, dir := range filepath.SplitList(build.Default.GOPATH) {
		p := filepath.Join(dir, "bin", "pebble")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// StartForBaton picks two free loopback ports for baton's HTTP and HTTPS
// listeners, holds them while pebble picks its own, and starts pebble
// validating on them. The ports are free again when it returns.
func StartForBaton(t testing.TB) (p *Pebble, httpPort, tlsPort int) {
	t.Helper()
	var held []net.Listener
	var ports []int
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	p = Start(t, ports[0], ports[1])
	for _, l := range held {
		l.Close()
	}
	return p, ports[0], ports[1]
}

// Start runs pebble for the rest of the test, validating challenges on
// 127.0.0.1 at httpPort (HTTP-01) and tlsPort (TLS-ALPN-01). Its output is
// logged if the test fails.
func Start(t testing.TB, httpPort, tlsPort int) *Pebble {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: skipping the test that needs pebble, a real ACME server", SkipEnv)
	}
	bin := Path()
	if bin == "" {
		t.Fatalf("pebble is not installed (not on $PATH nor in $GOPATH/bin): run .ci/install-pebble.sh "+
			"(go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1), or set %s=1 to skip this test", SkipEnv)
	}
	dir := t.TempDir()
	rootPEM, certFile, keyFile := apiCert(t, dir)
	ports := freePorts(t, 2)
	p := &Pebble{
		DirectoryURL: fmt.Sprintf("https://127.0.0.1:%d/dir", ports[0]),
		APIRoots:     x509.NewCertPool(),
		APIRootPEM:   rootPEM,
		mgmtURL:      fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		out:          &syncbuf.Buffer{},
	}
	p.APIRoots.AppendCertsFromPEM(rootPEM)

	conf := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	b, _ := json.Marshal(conf)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", startDNS(t))
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pebble output:\n%s", p.out.String())
		}
	})

	client := p.Client()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("pebble exited at start:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not answer at %s within 20s (last error: %v):\n%s", p.DirectoryURL, err, p.out.String())
		}
	}
}

// Client returns an HTTP client that trusts Pebble's API.
func (p *Pebble) Client() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.APIRoots}},
	}
}

// IssuerRoots fetches, from Pebble's management API, the root and
// intermediate it signs certificates with; they change every time Pebble
// starts. Verifying a served certificate against the returned pool (with
// the intermediates as intermediates) proves it came from this Pebble.
func (p *Pebble) IssuerRoots(t testing.TB) (roots, intermediates *x509.CertPool) {
	t.Helper()
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	for path, pool := range map[string]*x509.CertPool{"/roots/0": roots, "/intermediates/0": intermediates} {
		resp, err := p.Client().Get(p.mgmtURL + path)
		if err != nil {
			t.Fatalf("pebble management API %s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !pool.AppendCertsFromPEM(b) {
			t.Fatalf("pebble management API %s: status %d, body %q", path, resp.StatusCode, b)
		}
	}
	return roots, intermediates
}

// Output returns what pebble printed so far.
func (p *Pebble) Output() string { return p.out.String() }

// startDNS serves DNS on a loopback port, over TCP (which Pebble uses) and
// UDP, answering every A query with 127.0.0.1 and every other query with no
// records, and returns its address.
func startDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatalf("DNS server for pebble: %v", err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{Listener: ln, Handler: handler}, {PacketConn: pc, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return ln.Addr().String()
}

// apiCert makes a CA and a certificate for 127.0.0.1 signed by it, for
// Pebble's own HTTPS listeners, and returns the CA as PEM and the files of
// the certificate and key.
func apiCert(t testing.TB, dir string) (caPEM []byte, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebbletest API CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "api-cert.pem"), filepath.Join(dir, "api-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), certFile, keyFile
}

// freePorts returns n loopback TCP ports that were free a moment ago. Pebble
// cannot be told to pick its own and report it, so this small race is
// unavoidable.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
