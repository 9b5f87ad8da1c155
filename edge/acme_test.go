package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/pebbletest"
	"github.com/batonproxy/baton/internal/testlog"
)

// TestACMEWithPebble gets a certificate from a real ACME server (Pebble,
// validating for real against baton's listeners) once per challenge type,
// then serves an HTTPS request with it over HTTP/2, verified against
// Pebble's own root.
func TestACMEWithPebble(t *testing.T) {
	for _, tc := range []struct {
		name           string
		noHTTP, noALPN bool
	}{
		{"http-01", false, true},
		{"tls-alpn-01", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const domain = "baton.test"
			lns, err := Listen(ListenConfig{HTTP: "127.0.0.1:0", HTTPS: "127.0.0.1:0"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { lns.Close() })
			peb := pebbletest.Start(t, port(t, lns.HTTP), port(t, lns.HTTPS))

			storage := t.TempDir()
			acme, err := NewACME(ACMEConfig{
				Domains:                 []string{domain},
				CA:                      peb.DirectoryURL,
				Email:                   "ops@baton.test",
				StorageDir:              storage,
				TrustedRoots:            peb.APIRoots,
				HTTPAddr:                lns.HTTP.Addr().String(),
				HTTPSAddr:               lns.HTTPS.Addr().String(),
				DisableHTTPChallenge:    tc.noHTTP,
				DisableTLSALPNChallenge: tc.noALPN,
				Logger:                  testlog.New(t),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(acme.Stop)

			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "hello over %s", r.Proto)
			})
			// Count the validation requests that reach baton.
			var httpChallenges, alpnHellos atomic.Int64
			redirect := acme.HTTPHandler(Redirect(strconv.Itoa(port(t, lns.HTTPS)), nil))
			httpHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, ACMEChallengePrefix) {
					httpChallenges.Add(1)
				}
				redirect.ServeHTTP(w, r)
			})
			tlsConfig := acme.TLSConfig()
			if !slices.Equal(tlsConfig.NextProtos, []string{"h2", "http/1.1", "acme-tls/1"}) {
				t.Errorf("NextProtos = %q; want h2, http/1.1, acme-tls/1", tlsConfig.NextProtos)
			}
			getCert := tlsConfig.GetCertificate
			tlsConfig.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if slices.Contains(hello.SupportedProtos, "acme-tls/1") {
					alpnHellos.Add(1)
				}
				return getCert(hello)
			}
			httpSrv := NewServer(httpHandler, nil, Limits{}, testlog.New(t))
			httpsSrv := NewServer(app, tlsConfig, Limits{}, testlog.New(t))
			go httpSrv.Serve(lns.HTTP)
			go httpsSrv.ServeTLS(lns.HTTPS, "", "")
			t.Cleanup(func() { httpSrv.Close(); httpsSrv.Close() })

			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			if err := acme.Manage(ctx); err != nil {
				t.Fatal(err)
			}

			roots, intermediates := peb.IssuerRoots(t)
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: roots},
				ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, lns.HTTPS.Addr().String())
				},
			}}
			var resp *http.Response
			deadline := time.Now().Add(60 * time.Second)
			for {
				resp, err = client.Get("https://" + domain + "/")
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no certificate from pebble within 60s; last error: %v", err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := string(body), "hello over HTTP/2.0"; got != want {
				t.Errorf("body = %q; want %q", got, want)
			}
			if resp.TLS.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN = %q; want h2", resp.TLS.NegotiatedProtocol)
			}
			leaf := resp.TLS.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: intermediates}); err != nil {
				t.Errorf("served certificate does not chain to pebble's root: %v", err)
			}
			// Pebble validated for real, over the challenge type asked for,
			// on baton's own listeners.
			if tc.noHTTP && (httpChallenges.Load() != 0 || alpnHellos.Load() == 0) ||
				tc.noALPN && (alpnHellos.Load() != 0 || httpChallenges.Load() == 0) {
				t.Errorf("validation requests: %d HTTP-01, %d TLS-ALPN-01; want only %s", httpChallenges.Load(), alpnHellos.Load(), tc.name)
			}

			// The certificate and its key are in the storage directory, so a
			// restart does not ask the CA again.
			var found []string
			filepath.WalkDir(storage, func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, domain+".crt") {
					found = append(found, p)
				}
				return nil
			})
			if len(found) == 0 {
				t.Errorf("no %s.crt under the storage directory %s", domain, storage)
			}

			// The plain-HTTP port redirects to HTTPS, but not challenges.
			noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			r, err := noFollow.Get("http://" + lns.HTTP.Addr().String() + "/shop?x=1")
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if want := "https://127.0.0.1:" + strconv.Itoa(port(t, lns.HTTPS)) + "/shop?x=1"; r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != want {
				t.Errorf("GET http://.../shop = %d %q; want 301 %q", r.StatusCode, r.Header.Get("Location"), want)
			}
		})
	}
}

func port(t testing.TB, ln net.Listener) int {
	t.Helper()
	return ln.Addr().(*net.TCPAddr).Port
}
