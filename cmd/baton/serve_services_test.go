package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
)

// servicePair is one service's two apps.
type servicePair struct{ blue, green *edgeApp }

func newPair(t *testing.T, name string) servicePair {
	return servicePair{newEdgeApp(t, name+"-blue"), newEdgeApp(t, name+"-green")}
}

func (p servicePair) yaml(extra string) string {
	return fmt.Sprintf("    blue: %s\n    green: %s\n%s", p.blue.addr(), p.green.addr(), extra)
}

// getHost sends GET path with the given Host header through baton and
// returns the status and body.
func getHost(t *testing.T, b *runningBaton, host, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", b.httpURL()+path, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func adminPost(t *testing.T, b *runningBaton, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(b.adminURL()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestServeServicesFromConfigFile runs 'baton serve --config' with three
// services, two by host and one by path under a shared host: each request
// reaches its service's live app, a host nobody claims gets 404, and a
// switch of one service moves only that service.
func TestServeServicesFromConfigFile(t *testing.T) {
	shop, api, adm := newPair(t, "shop"), newPair(t, "api"), newPair(t, "admin")
	file := filepath.Join(t.TempDir(), "baton.yaml")
	os.WriteFile(file, []byte(`no_stop: true
health_passes: 1
health_interval: 20ms
services:
  shop:
    hosts: [shop.example.com, www.shop.example.com]
`+shop.yaml("")+`  api:
    hosts: [api.example.com]
`+api.yaml("")+`  shop-admin:
    hosts: [shop.example.com]
    path_prefix: /admin
    strip_prefix: true
`+adm.yaml("")), 0o600)
	b := startServeArgs(t, "--config", file)

	for _, c := range []struct {
		host, path string
		code       int
		body       string
	}{
		{"shop.example.com", "/cart", 200, "shop-blue /cart"},
		{"WWW.shop.example.com:80", "/", 200, "shop-blue /"},
		{"api.example.com", "/v1/orders", 200, "api-blue /v1/orders"},
		{"shop.example.com", "/admin/users", 200, "admin-blue /users"},
		{"shop.example.com", "/administrator", 200, "shop-blue /administrator"},
		{"evil.example.net", "/", 404, "404 Not Found: no site here"},
	} {
		if code, body := getHost(t, b, c.host, c.path); code != c.code || body != c.body {
			t.Errorf("%s%s: %d %q; want %d %q", c.host, c.path, code, body, c.code, c.body)
		}
	}

	// Each service's requests are its own series; the unknown host counts
	// as a request no service claims.
	mresp, err := http.Get(b.adminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`baton_http_requests_total{code="2xx",color="blue",method="GET",service="shop"} 3`,
		`baton_http_requests_total{code="2xx",color="blue",method="GET",service="api"} 1`,
		`baton_http_requests_total{code="2xx",color="blue",method="GET",service="shop-admin"} 1`,
		`baton_no_route_requests_total 1`,
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	resp, err := http.Get(b.adminURL() + "/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	var list admin.ServicesResponse
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Services) != 3 {
		t.Fatalf("GET /v1/services: %+v; want 3 services", list)
	}

	// The old routes need a service when there are several.
	if code, out := adminPost(t, b, "/v1/switch", `{}`); code != 400 || !strings.Contains(out, "shop-admin") {
		t.Errorf("POST /v1/switch with 3 services: %d %s; want 400 naming them", code, out)
	}
	if code, out := adminPost(t, b, "/v1/services/api/switch", `{}`); code != 200 {
		t.Fatalf("switch api: %d %s", code, out)
	}
	if _, body := getHost(t, b, "api.example.com", "/"); body != "api-green /" {
		t.Errorf("api after its switch: %q; want api-green", body)
	}
	if _, body := getHost(t, b, "shop.example.com", "/"); body != "shop-blue /" {
		t.Errorf("shop after api's switch: %q; want it still on blue", body)
	}
	if _, body := getHost(t, b, "shop.example.com", "/admin/"); body != "admin-blue /" {
		t.Errorf("shop-admin after api's switch: %q; want it still on blue", body)
	}
}

// TestServeReload edits the config file and reloads it: a service is
// added, one changed, one removed; the unchanged one keeps its live colour
// and a request in flight on it; a file with errors changes nothing and
// lists every problem with its line.
func TestServeReload(t *testing.T) {
	shop, api, adm := newPair(t, "shop"), newPair(t, "api"), newPair(t, "admin")
	file := filepath.Join(t.TempDir(), "baton.yaml")
	write := func(body string) {
		if err := os.WriteFile(file, []byte("no_stop: true\nhealth_passes: 1\nhealth_interval: 20ms\nservices:\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("  shop:\n    hosts: [shop.example.com]\n" + shop.yaml("") + "  api:\n    hosts: [api.example.com]\n" + api.yaml(""))
	b := startServeArgs(t, "--config", file)
	if code, out := adminPost(t, b, "/v1/services/shop/switch", `{}`); code != 200 {
		t.Fatalf("switch shop: %d %s", code, out)
	}

	// A slow request on shop, in flight across the reload.
	slow := make(chan string, 1)
	go func() {
		_, body := getHost(t, b, "shop.example.com", "/slow?ms=600")
		slow <- body
	}()
	time.Sleep(150 * time.Millisecond)

	write("  shop:\n    hosts: [shop.example.com, www.shop.example.com]\n" + shop.yaml("") +
		"  shop-admin:\n    hosts: [shop.example.com]\n    path_prefix: /admin\n" + adm.yaml("    health_passes: 2\n"))
	code, out := adminPost(t, b, "/v1/reload", `{}`)
	if code != 200 {
		t.Fatalf("reload: %d %s", code, out)
	}
	var rep admin.ReloadResponse
	json.Unmarshal([]byte(out), &rep)
	if strings.Join(rep.Added, ",") != "shop-admin" || len(rep.Removed) != 1 || rep.Removed[0].Name != "api" || strings.Join(rep.Rerouted, ",") != "shop" {
		t.Errorf("reload report: %s; want shop-admin added, api removed, shop rerouted", out)
	}
	if body := <-slow; !strings.HasPrefix(body, "shop-green") {
		t.Errorf("request in flight across the reload: %q; want shop-green's answer", body)
	}
	for _, c := range [][3]string{
		{"shop.example.com", "/", "shop-green /"}, // still live on green: untouched
		{"www.shop.example.com", "/", "shop-green /"},
		{"shop.example.com", "/admin/x", "admin-blue /admin/x"},
		{"api.example.com", "/", "404 Not Found: no site here"},
	} {
		if _, body := getHost(t, b, c[0], c[1]); body != c[2] {
			t.Errorf("after reload %s%s: %q; want %q", c[0], c[1], body, c[2])
		}
	}

	// A bad file: every problem with its line, and nothing changes.
	os.WriteFile(file, []byte(`services:
  shop:
    hosts: [shop.example.com]
`+shop.yaml("    helth_path: /up\n")+`  api:
    hosts: [shop.example.com]
`+api.yaml("    http: :81\n")), 0o600)
	code, out = adminPost(t, b, "/v1/reload", `{}`)
	var bad struct {
		Errors []string `json:"errors"`
	}
	json.Unmarshal([]byte(out), &bad)
	if code != 400 || len(bad.Errors) != 3 {
		t.Fatalf("reload of a bad file: %d %s; want 400 with 3 problems", code, out)
	}
	// The route conflict is found although both services have other problems.
	for i, want := range []string{file + ":6: service shop: unknown setting helth_path (did you mean health_path?)", file + ":11: service api: http is not a setting of one service",
		file + ":8: services shop and api both claim host shop.example.com"} {
		if !strings.HasPrefix(bad.Errors[i], want) {
			t.Errorf("problem %d = %q; want %q", i+1, bad.Errors[i], want)
		}
	}
	if _, body := getHost(t, b, "shop.example.com", "/admin/x"); body != "admin-blue /admin/x" {
		t.Errorf("after a refused reload: %q; want the services as they were", body)
	}
}

// checkConfigFile reads the config file at path as 'baton serve --config
// path' does at start, and returns its services or every problem found.
func checkConfigFile(path string) ([]serviceConfig, error) {
	args := []string{"--config", path}
	var cfg serveConfig
	fs := newServeFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	file, err := loadConfigFile(fs, &cfg)
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return serviceConfigs(args, &cfg, file)
}

// TestServeConfigFileProblems checks that 'baton serve' refuses a config
// file with problems, naming each with its line.
func TestServeConfigFileProblems(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		body string
		want []string
	}{
		"routing": {`services:
  a:
    hosts: [x.example.com]
    blue: 127.0.0.1:1
    green: 127.0.0.1:2
  b:
    hosts: [X.example.com]
    blue: 127.0.0.1:3
    green: 127.0.0.1:4
  c:
    hosts: ["*.*.example.com"]
    blue: 127.0.0.1:1
    green: 127.0.0.1:6
`, []string{":7: services a and b both claim host x.example.com", `:11: service c: host "*.*.example.com"`, ":10: service c: blue 127.0.0.1:1 is also service a's blue"}},
		"settings": {`hosts: [a.example.com]
services:
  a:
    blue: nonsense
    green: 127.0.0.1:2
    health_passes: many
`, []string{":1: hosts belongs to a service"}},
		"values": {`services:
  a:
    blue: nonsense
    green: 127.0.0.1:2
  B:
    blue: 127.0.0.1:3
`, []string{`:5: service name "B"`}},
		"flag values": {`services:
  a:
    blue: nonsense
    green: 127.0.0.1:2
`, []string{`:2: service a: --blue "nonsense": want host:port`}},
		"empty services": {"services: {}\n", []string{": services: is empty"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".yaml")
			os.WriteFile(path, []byte(c.body), 0o600)
			_, err := checkConfigFile(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), path+w) {
					t.Errorf("error lacks %q:\n%v", path+w, err)
				}
			}
		})
	}
}

// TestServeCommandLineWinsOverTheFile: a flag given on the command line
// beats the file's top level and a service's entry.
func TestServeCommandLineWinsOverTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baton.yaml")
	os.WriteFile(path, []byte(`health_passes: 3
drain_timeout: 5s
services:
  a:
    hosts: [a.example.com]
    blue: 127.0.0.1:1
    green: 127.0.0.1:2
    health_passes: 4
  b:
    blue: 127.0.0.1:3
    green: 127.0.0.1:4
`), 0o600)
	for _, tc := range []struct {
		args         []string
		wantA, wantB int
		wantDrainOfB time.Duration
	}{
		{nil, 4, 3, 5 * time.Second},
		{[]string{"--health-passes", "7", "--drain-timeout", "9s"}, 7, 7, 9 * time.Second},
	} {
		var cfg serveConfig
		fs := newServeFlags(&cfg)
		args := append([]string{"--config", path}, tc.args...)
		fs.Parse(args)
		file, err := loadConfigFile(fs, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		scs, err := serviceConfigs(args, &cfg, file)
		if err != nil {
			t.Fatal(err)
		}
		if scs[0].HealthPasses != tc.wantA || scs[1].HealthPasses != tc.wantB || scs[1].DrainTimeout != tc.wantDrainOfB {
			t.Errorf("%q: a %d, b %d, b's drain %s; want %d, %d, %s", tc.args, scs[0].HealthPasses, scs[1].HealthPasses, scs[1].DrainTimeout, tc.wantA, tc.wantB, tc.wantDrainOfB)
		}
	}
}

// TestServicePerServiceBodyLimit gives one service a body limit of its
// own, under a top-level one for the others: the same upload is refused
// (413) by one and passes through the other, on both front ends.
func TestServicePerServiceBodyLimit(t *testing.T) {
	uploads, api := newPair(t, "uploads"), newPair(t, "api")
	file := filepath.Join(t.TempDir(), "baton.yaml")
	os.WriteFile(file, []byte(`no_stop: true
max_body_size: 1k
services:
  uploads:
    hosts: [uploads.example.com]
    max_body_size: 10m
`+uploads.yaml("")+`  api:
    hosts: [api.example.com]
`+api.yaml("")), 0o600)
	for _, fast := range []string{"true", "false"} {
		b := startServeArgs(t, "--config", file, "--fast-path="+fast)
		for _, c := range []struct {
			host string
			code int
		}{{"uploads.example.com", 200}, {"api.example.com", 413}} {
			req, _ := http.NewRequest("POST", b.httpURL()+"/up", strings.NewReader(strings.Repeat("x", 5000)))
			req.Host = c.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.code {
				t.Errorf("fast path %s: POST of 5000 bytes to %s: %d %q; want %d", fast, c.host, resp.StatusCode, body, c.code)
			}
		}
		b.stop()
	}
}
