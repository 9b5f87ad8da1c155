package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/pebbletest"
)

// TestUpgradeKeepsTheCertificate: after an upgrade of baton itself, HTTPS
// keeps serving the certificate obtained before it; the new process reads
// it from storage instead of asking the ACME server again.
func TestUpgradeKeepsTheCertificate(t *testing.T) {
	const domain = "upgrade.baton.test"
	b := newBaton(t)
	// Pebble validates on baton's ports, so they are fixed first.
	peb, httpPort, tlsPort := pebbletest.StartForBaton(t)
	rootFile := filepath.Join(t.TempDir(), "pebble-api-root.pem")
	if err := os.WriteFile(rootFile, peb.APIRootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	app := startApp(t, b.blue, "v1")
	waitListening(t, app, 10*time.Second)

	dir := t.TempDir()
	installed := filepath.Join(dir, "baton")
	install(t, buildVersion(t, dir, "tls-a"), installed)
	next := buildVersion(t, dir, "tls-b")
	b.http = fmt.Sprintf("127.0.0.1:%d", httpPort)
	httpsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	_, logPath := upgradeBaton(t, b, installed, "--https", httpsAddr, "--domain", domain,
		"--acme-ca", peb.DirectoryURL, "--acme-ca-root", rootFile, "--acme-email", "ops@baton.test")

	roots, _ := peb.IssuerRoots(t)
	serial := func() (string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
			},
		}}
		resp, err := c.Get("https://" + domain + "/")
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-App-Version") != "v1" {
			return "", fmt.Errorf("status %d from %q", resp.StatusCode, resp.Header.Get("X-App-Version"))
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
	}
	var before string
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; {
		if before, err = serial(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("no certificate from Pebble: %v\nbaton log:\n%s\npebble:\n%s", err, log, peb.Output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	old, _ := b.status()

	install(t, next, installed)
	if out, code := b.cli("upgrade"); code != 0 {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("upgrade: %d\n%s\nbaton log:\n%s", code, out, log)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		st, err := b.status()
		if err == nil && st.PID != old.PID && st.BatonVersion == "tls-b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new baton never served: %+v, %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitGone(t, old.PID, 10*time.Second)
	after, err := serial()
	if err != nil {
		t.Fatalf("HTTPS after the upgrade: %v", err)
	}
	if after != before {
		t.Fatalf("certificate serial changed across the upgrade (%s → %s): it was issued again", before, after)
	}
}
