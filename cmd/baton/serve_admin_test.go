package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// Issue 13, item 20: '--max-artifact-size 10m' was refused while
// '--max-body-size 10m' worked, and "MB" meant 10^6 in one flag and 2^20
// in the other. Every size flag now has one parser (edge.ParseSize) with
// one meaning: k, m, g are powers of 1024, with or without "b"/"ib".
func TestEverySizeFlagParsesTheSame(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"10m", 10 << 20}, {"10M", 10 << 20}, {"10MB", 10 << 20}, {"10MiB", 10 << 20},
		{"512k", 512 << 10}, {"2GiB", 2 << 30}, {"1048576", 1 << 20},
	} {
		var cfg serveConfig
		fs := newFlagSet("serve", serveSynopsis, new(bytes.Buffer))
		cfg.flags(fs)
		args := []string{"--max-artifact-size", tc.in, "--max-body-size", tc.in, "--max-header-bytes", tc.in}
		if err := parseFlags(fs, args); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		got := []int64{int64(cfg.Launch.MaxArtifact), int64(cfg.MaxBodySize), int64(cfg.Edge.MaxHeaderBytes)}
		for i, name := range []string{"--max-artifact-size", "--max-body-size", "--max-header-bytes"} {
			if got[i] != tc.want {
				t.Errorf("%s %s = %d; want %d", name, tc.in, got[i], tc.want)
			}
		}
	}
	var out bytes.Buffer
	if code := run(context.Background(), []string{"serve", "--max-artifact-size", "lots"}, &out, &out); code != exitUsage ||
		!strings.Contains(out.String(), `size "lots"`) {
		t.Errorf("--max-artifact-size lots: exit %d\n%s\nwant 2 naming the value", code, out.String())
	}
}

// Issue 13, item 20: 'baton probe' took --admin only from its flag; like
// every other client command it reads $BATON_ADMIN (and $BATON_ADMIN_CA).
func TestProbeHonoursBatonAdmin(t *testing.T) {
	var statusCalls atomic.Int64
	adminSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/status" {
			statusCalls.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"live":"blue","upstreams":[],"history":[]}`)
	}))
	t.Cleanup(adminSrv.Close)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "v1 ok") }))
	t.Cleanup(app.Close)
	t.Setenv("BATON_ADMIN", adminSrv.URL)
	var out bytes.Buffer
	if code := run(context.Background(), []string{"probe", app.URL + "/", "--duration", "200ms", "--rate", "20"}, &out, &out); code != 0 {
		t.Fatalf("probe: exit %d\n%s", code, out.String())
	}
	if statusCalls.Load() == 0 {
		t.Errorf("probe with $BATON_ADMIN set never asked the admin API for the switches; output:\n%s", out.String())
	}
}
