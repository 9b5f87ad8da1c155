package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// crossSiteCase is one request a web page in a browser on baton's host
// could make (a form post, a no-cors fetch, a DNS-rebound page), or a
// same-origin control that must still work.
type crossSiteCase struct {
	name    string
	path    string
	host    string // Host header; empty: the listener's address
	ctype   string // Content-Type; empty: none
	origin  string
	fetch   string // Sec-Fetch-Site
	body    string
	want    int
	wantMsg string
}

func sendCrossSite(t *testing.T, srvURL, token string, tc crossSiteCase) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", srvURL+tc.path, strings.NewReader(tc.body))
	if err != nil {
		t.Fatal(err)
	}
	if tc.host != "" {
		req.Host = tc.host
	}
	if tc.ctype != "" {
		req.Header.Set("Content-Type", tc.ctype)
	}
	if tc.origin != "" {
		req.Header.Set("Origin", tc.origin)
	}
	if tc.fetch != "" {
		req.Header.Set("Sec-Fetch-Site", tc.fetch)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Issue 13, item 1: without a token, a browser's cross-site form post
// (text/plain, empty body, a foreign Origin and Host) switched traffic, and
// a deploy without a Content-Type downloaded and started an artifact. Each
// shape is now a 403 with a JSON reason, and nothing reaches the switcher
// or the artifact's server.
func TestCrossSiteRequestsAreRefused(t *testing.T) {
	var downloads atomic.Int64
	art := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		downloads.Add(1)
		io.WriteString(w, "evil artifact")
	}))
	t.Cleanup(art.Close)
	deployURL := `{"version":"v6","artifact":"` + art.URL + `/evil.jar"}`

	ctl := &fullController{}
	srv := httptest.NewServer(New(Config{Upgrade: fakeUpgrader{}}, only(ctl, DeployConfig{UploadDir: t.TempDir()})))
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]

	for _, tc := range []crossSiteCase{
		{name: "form post from another site", path: "/v1/switch", host: "evil.example:9900", ctype: "text/plain",
			origin: "https://evil.example", want: 403},
		{name: "DNS rebinding: foreign Host, JSON", path: "/v1/switch", host: "evil.example:9900", ctype: "application/json",
			body: "{}", want: 403, wantMsg: "Host"},
		{name: "DNS rebinding: deploy by URL", path: "/v1/deploy", host: "evil.example:" + port, ctype: "application/json",
			body: deployURL, want: 403, wantMsg: "Host"},
		{name: "foreign Origin, loopback Host", path: "/v1/switch", ctype: "application/json", origin: "https://evil.example",
			body: "{}", want: 403, wantMsg: "cross-origin"},
		{name: "Origin null", path: "/v1/switch", ctype: "application/json", origin: "null", body: "{}", want: 403},
		{name: "Sec-Fetch-Site cross-site", path: "/v1/switch", ctype: "application/json", fetch: "cross-site", body: "{}", want: 403},
		{name: "Sec-Fetch-Site same-site", path: "/v1/rollback", ctype: "application/json", fetch: "same-site", body: "{}", want: 403},
		{name: "text/plain, empty body", path: "/v1/switch", ctype: "text/plain", want: 403, wantMsg: "application/json"},
		{name: "no Content-Type, empty body", path: "/v1/switch", want: 403, wantMsg: "application/json"},
		{name: "form-urlencoded", path: "/v1/switch", ctype: "application/x-www-form-urlencoded", body: "to=green", want: 403},
		{name: "multipart form", path: "/v1/upgrade", ctype: "multipart/form-data; boundary=x", body: "--x--", want: 403},
		{name: "deploy by URL without Content-Type", path: "/v1/deploy", body: deployURL, want: 403, wantMsg: "application/json"},
		{name: "deploy by URL as text/plain", path: "/v1/deploy", ctype: "text/plain;charset=UTF-8", body: deployURL, want: 403},
		{name: "rollback without Content-Type", path: "/v1/rollback", want: 403},
		{name: "upload to switch", path: "/v1/switch", ctype: "application/octet-stream", body: "x", want: 415},
	} {
		code, body := sendCrossSite(t, srv.URL, "", tc)
		if code != tc.want {
			t.Errorf("%s: %d %s; want %d", tc.name, code, body, tc.want)
			continue
		}
		if msg := errorOf(t, body); !strings.Contains(msg, tc.wantMsg) {
			t.Errorf("%s: error %q; want it to mention %q", tc.name, msg, tc.wantMsg)
		}
	}
	if s, d, r := ctl.calls(); s+d+r != 0 {
		t.Fatalf("cross-site requests reached the switcher: %d switches, %d deploys, %d rollbacks", s, d, r)
	}
	if n := downloads.Load(); n != 0 {
		t.Fatalf("cross-site deploys fetched the artifact %d time(s)", n)
	}

	// The same requests from a CLI, curl or a same-origin page still work.
	for _, tc := range []crossSiteCase{
		{name: "JSON, empty body", path: "/v1/switch", ctype: "application/json", want: 200},
		{name: "JSON with charset", path: "/v1/switch", ctype: "application/json; charset=utf-8", body: "{}", want: 200},
		{name: "Host localhost", path: "/v1/switch", host: "localhost:" + port, ctype: "application/json", want: 200},
		{name: "Host [::1]", path: "/v1/switch", host: "[::1]:" + port, ctype: "application/json", want: 200},
		{name: "same Origin", path: "/v1/switch", ctype: "application/json", origin: srv.URL, want: 200},
		{name: "Sec-Fetch-Site same-origin", path: "/v1/rollback", ctype: "application/json", fetch: "same-origin", want: 200},
	} {
		if code, body := sendCrossSite(t, srv.URL, "", tc); code != tc.want {
			t.Errorf("%s: %d %s; want %d", tc.name, code, body, tc.want)
		}
	}
}

// With a token, a foreign Host is fine (baton is reached by its name from
// CI), but a browser's cross-origin request is refused even with the right
// token, and a form-shaped body is refused too.
func TestCrossOriginRefusedWhateverTheToken(t *testing.T) {
	ctl := &fullController{}
	srv := httptest.NewServer(New(Config{Token: "s3cret", Upgrade: fakeUpgrader{}}, only(ctl, DeployConfig{})))
	t.Cleanup(srv.Close)
	for _, tc := range []crossSiteCase{
		{name: "foreign Origin", path: "/v1/switch", host: "baton.example:9900", ctype: "application/json", origin: "https://evil.example", body: "{}", want: 403},
		{name: "Sec-Fetch-Site cross-site", path: "/v1/switch", ctype: "application/json", fetch: "cross-site", body: "{}", want: 403},
		{name: "text/plain", path: "/v1/switch", ctype: "text/plain", want: 403},
	} {
		code, body := sendCrossSite(t, srv.URL, "s3cret", tc)
		if code != tc.want {
			t.Errorf("%s: %d %s; want %d", tc.name, code, body, tc.want)
			continue
		}
		errorOf(t, body)
	}
	if s, d, r := ctl.calls(); s+d+r != 0 {
		t.Fatalf("cross-origin requests reached the switcher: %d switches, %d deploys, %d rollbacks", s, d, r)
	}
	ok := crossSiteCase{path: "/v1/switch", host: "baton.example:9900", ctype: "application/json"}
	if code, body := sendCrossSite(t, srv.URL, "s3cret", ok); code != 200 {
		t.Errorf("foreign Host with the token: %d %s; want 200", code, body)
	}
}
