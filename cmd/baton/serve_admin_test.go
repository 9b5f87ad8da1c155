package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
)

// Issue 13, item 14: the admin API had no TLS, so a CI job on another host
// sent the token in clear. With --admin-tls-cert/--admin-tls-key it serves
// HTTPS only, and the CLI reaches it with --admin https://... and
// --admin-ca for a private CA (here a certificate made by the test).
func TestAdminTLS(t *testing.T) {
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	certPath, keyPath, _ := writeSelfSigned(t, t.TempDir(), "baton-admin")
	b := startServe(t, blue, green, "--admin-tls-cert", certPath, "--admin-tls-key", keyPath)
	httpsURL := "https://" + b.lns.Admin.Addr().String()

	cli := func(args ...string) (int, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := cli("status", "--admin", httpsURL, "--admin-ca", certPath); code != 0 || !strings.Contains(out, "live: blue") {
		t.Fatalf("status over HTTPS with --admin-ca: exit %d\n%s", code, out)
	}
	t.Setenv("BATON_ADMIN", httpsURL)
	t.Setenv("BATON_ADMIN_CA", certPath)
	if code, out := cli("switch", "--to", "green"); code != 0 || !strings.Contains(out, "switched to green") {
		t.Fatalf("switch over HTTPS with $BATON_ADMIN_CA: exit %d\n%s", code, out)
	}
	t.Setenv("BATON_ADMIN_CA", "")
	if code, out := cli("status"); code != 1 || !strings.Contains(out, "certificate") {
		t.Errorf("status over HTTPS without the CA: exit %d\n%s; want 1 naming the certificate", code, out)
	}
	if code, out := cli("status", "--admin-ca", "/nonexistent/ca.pem"); code != 1 || !strings.Contains(out, "/nonexistent/ca.pem") {
		t.Errorf("status with a missing --admin-ca: exit %d\n%s; want 1 naming the file", code, out)
	}
	// Plain HTTP on the TLS port carries no token to anyone: it is refused.
	resp, err := http.Get("http://" + b.lns.Admin.Addr().String() + "/v1/status")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the TLS admin port: %s; want it refused", resp.Status)
		}
	}
}

func TestAdminTLSFlagMisuse(t *testing.T) {
	for _, args := range [][]string{
		{"--admin-tls-cert", "/x.crt"},
		{"--admin-tls-key", "/x.key"},
	} {
		var cfg serveConfig
		fs := newFlagSet("serve", serveSynopsis, new(bytes.Buffer))
		cfg.flags(fs)
		if err := parseFlags(fs, args); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "--admin-tls-cert and --admin-tls-key") {
			t.Errorf("%q: validate = %v; want both flags required together", args, err)
		}
	}
}
