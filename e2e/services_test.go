package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/loadgen"
	"github.com/batonproxy/baton/internal/sampleapp"
)

// e2eService is one service of a baton started with --config: how the
// load reaches it and which versions it has had.
type e2eService struct {
	name         string
	host, prefix string // the Host header and path prefix that route to it
	blue, green  string
	extra        string // more YAML lines of its entry, indented by 4
}

// yaml is the service's entry in the config file.
func (s e2eService) yaml() string {
	y := fmt.Sprintf("  %s:\n    hosts: [%s]\n    blue: %s\n    green: %s\n", s.name, s.host, s.blue, s.green)
	if s.prefix != "" {
		y += fmt.Sprintf("    path_prefix: %s\n    strip_prefix: true\n", s.prefix)
	}
	return y + s.extra
}

// load is the load on the service: every kind of request, with the
// service's Host and under its prefix.
func (s e2eService) load(target string) loadgen.Config {
	return loadgen.Config{
		Target: target, Host: s.host, Rate: 80, KeepAliveConns: 4,
		NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 300 * time.Millisecond, SlowMax: 1500 * time.Millisecond,
		PostFraction: 0.1,
		Path:         s.prefix + "/", SlowPath: s.prefix + "/slow", PostPath: s.prefix + "/echo",
	}
}

// servicesFile is the top of a config file whose services run the sample
// app as their artifact.
const servicesFile = `run: "` + appRun + ` --startup-delay 300ms"
drain_timeout: 10s
health_passes: 1
services:
`

func newServices(t *testing.T) []e2eService {
	return []e2eService{
		{name: "shop", host: "shop.example.com", blue: freeAddr(t), green: freeAddr(t)},
		{name: "api", host: "api.example.com", blue: freeAddr(t), green: freeAddr(t)},
		{name: "shop-admin", host: "shop.example.com", prefix: "/admin", blue: freeAddr(t), green: freeAddr(t)},
	}
}

func writeServicesFile(t *testing.T, file string, svcs []e2eService) {
	t.Helper()
	var b strings.Builder
	b.WriteString(servicesFile)
	for _, s := range svcs {
		b.WriteString(s.yaml())
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// deployService deploys version v of the sample app to service s and
// fails the test unless it succeeded.
func (b *baton) deployService(s e2eService, v string) {
	b.t.Helper()
	_, last, out, code := b.deploy("--service", s.name, "--artifact", appBin, "--version", v)
	if code != 0 || last.OK == nil || !*last.OK {
		b.t.Errorf("deploy %s of %s exited %d:\n%s", v, s.name, code, out)
	}
}

// liveVersions returns each service's live version, from /v1/services.
func (b *baton) liveVersions() map[string]string {
	b.t.Helper()
	resp, err := b.services()
	if err != nil {
		b.t.Fatalf("services: %v", err)
	}
	live := map[string]string{}
	for _, s := range resp.Services {
		for _, u := range s.Upstreams {
			if u.Color == s.Live && u.Instance != nil {
				live[s.Name] = u.Instance.AppVersion
			}
		}
	}
	return live
}

// TestServicesDeployUnderLoadLosesNothing is issue 15's promise for several
// services: three services behind one baton (two by host, one by path
// prefix under a shared host), load through all three, 12 deploys spread
// over them with two running at the same time on different services: no
// request fails, every answer comes from its own service, never from an
// older version once a deploy of it has finished, and after each round only
// the services deployed in it changed version.
func TestServicesDeployUnderLoadLosesNothing(t *testing.T) {
	rounds := 6 // two deploys each
	if testing.Short() {
		rounds = 2
	}
	svcs := newServices(t)
	file := filepath.Join(t.TempDir(), "baton.yaml")
	writeServicesFile(t, file, svcs)
	b := newBaton(t, "--config", file)
	b.start()
	for _, s := range svcs {
		b.deployService(s, s.name+"-v1")
	}
	if t.Failed() {
		t.Fatalf("first deploys failed; baton log:\n%s", b.proc.out.String())
	}

	ctx, stopLoad := context.WithCancel(context.Background())
	reports := make([]*loadgen.Report, len(svcs))
	var loads sync.WaitGroup
	for i, s := range svcs {
		loads.Go(func() { reports[i] = loadgen.Run(ctx, s.load(b.http)) })
	}
	time.Sleep(300 * time.Millisecond)

	// deployed[s] holds when each version of s became live for sure: the
	// end of its deploy. versions are "<service>-v<n>".
	type done struct {
		n  int
		at time.Time
	}
	deployed := map[string][]done{}
	next := map[string]int{}
	for _, s := range svcs {
		next[s.name] = 2
	}
	for r := 0; r < rounds; r++ {
		pair := []e2eService{svcs[r%3], svcs[(r+1)%3]}
		before := b.liveVersions()
		var wg sync.WaitGroup
		for _, s := range pair {
			n := next[s.name]
			next[s.name]++
			wg.Go(func() {
				b.deployService(s, s.name+"-v"+strconv.Itoa(n))
			})
		}
		wg.Wait()
		after := b.liveVersions()
		for _, s := range svcs {
			changed := before[s.name] != after[s.name]
			inRound := s.name == pair[0].name || s.name == pair[1].name
			if changed != inRound {
				t.Errorf("round %d deployed %s and %s; %s went from %s to %s", r, pair[0].name, pair[1].name,
					s.name, before[s.name], after[s.name])
			}
		}
		for _, s := range pair {
			deployed[s.name] = append(deployed[s.name], done{next[s.name] - 1, time.Now()})
		}
	}
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	loads.Wait()

	for i, s := range svcs {
		rep := reports[i]
		t.Logf("%s: %s", s.name, rep.Summary())
		if rep.Total() < 200 {
			t.Errorf("%s: only %d requests were sent; the load did not run", s.name, rep.Total())
		}
		failOnFailures(t, rep, s.name+": ", b.proc.out.String())
		for _, res := range rep.Results {
			if !res.OK() {
				continue
			}
			n, ok := strings.CutPrefix(res.Version, s.name+"-v")
			got, err := strconv.Atoi(n)
			if !ok || err != nil {
				t.Errorf("%s: a %s request was answered by %q, not by this service", s.name, res.Kind, res.Version)
				continue
			}
			least := 1
			for _, d := range deployed[s.name] {
				if !res.Start.Before(d.at) {
					least = max(least, d.n)
				}
			}
			if got < least {
				t.Errorf("%s: %s request at %s answered by v%d; v%d was live before it started",
					s.name, res.Kind, res.Start.Format("15:04:05.000"), got, least)
			}
		}
	}
}

// TestServicesReloadUnderLoad changes the config file under load and
// reloads it: a service is added, one changed, one removed. The others
// lose no request, an SSE stream and a WebSocket open on an unchanged
// service survive,
// the removed service's instance is left running and the reload says so,
// and a file with errors changes nothing and names every error's line.
func TestServicesReloadUnderLoad(t *testing.T) {
	svcs := newServices(t) // shop, api, shop-admin
	file := filepath.Join(t.TempDir(), "baton.yaml")
	writeServicesFile(t, file, svcs)
	b := newBaton(t, "--config", file)
	b.start()
	for _, s := range svcs {
		b.deployService(s, s.name+"-v1")
	}
	if t.Failed() {
		t.Fatalf("first deploys failed; baton log:\n%s", b.proc.out.String())
	}
	adminPID := appPID(t, b, "shop-admin")

	// An SSE stream on shop, which the reload leaves alone: 600 events
	// 50 ms apart outlast the test.
	sse := openSSE(t, b.http, svcs[0].host, "/sse?n=600&interval=50ms")
	sse.expect(t, 3)
	// And a WebSocket on shop, which must echo after the reload too.
	ws, wsr, wsVersion, err := sampleapp.DialWebSocket(b.http, svcs[0].host)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if wsVersion != "shop-v1" {
		t.Fatalf("WebSocket answered by %q; want shop-v1", wsVersion)
	}
	echo := func(when string) {
		t.Helper()
		ws.SetDeadline(time.Now().Add(5 * time.Second))
		msg := "ping " + when + "\n"
		if _, err := io.WriteString(ws, msg); err != nil {
			t.Fatalf("WebSocket %s: %v", when, err)
		}
		if got, err := wsr.ReadString('\n'); got != msg {
			t.Fatalf("WebSocket echo %s = %q (%v); want %q", when, got, err, msg)
		}
	}
	echo("before the reload")

	ctx, stopLoad := context.WithCancel(context.Background())
	var loads sync.WaitGroup
	reports := make([]*loadgen.Report, 2)
	for i, s := range svcs[:2] { // shop and api
		loads.Go(func() { reports[i] = loadgen.Run(ctx, s.load(b.http)) })
	}
	time.Sleep(500 * time.Millisecond)

	// Add blog, change api (a longer drain), remove shop-admin.
	blog := e2eService{name: "blog", host: "blog.example.com", blue: freeAddr(t), green: freeAddr(t)}
	api := svcs[1]
	api.extra = "    drain_timeout: 20s\n"
	writeServicesFile(t, file, []e2eService{svcs[0], api, blog})
	out, code := b.cli("reload")
	if code != 0 {
		t.Fatalf("reload exited %d:\n%s\nbaton log:\n%s", code, out, b.proc.out.String())
	}
	for _, want := range []string{"blog", "api", "shop-admin", strconv.Itoa(adminPID)} {
		if !strings.Contains(out, want) {
			t.Errorf("reload output does not name %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "unchanged: shop") {
		t.Errorf("reload reports shop, which did not change:\n%s", out)
	}
	// shop-admin's prefix now belongs to shop; its app is left running.
	if code, _, v := getVia(t, b.http, "shop.example.com", "/admin/"); code != 200 || !strings.HasPrefix(v, "shop-v") {
		t.Errorf("after removing shop-admin, shop.example.com/admin/ got %d from %q; want 200 from shop", code, v)
	}
	if gone(adminPID) {
		t.Errorf("reload stopped the removed service's app (pid %d); it is the operator's to stop", adminPID)
	}
	if !strings.Contains(out, "'baton service stop shop-admin' stops it") {
		t.Errorf("reload output does not say how to stop the removed service's app:\n%s", out)
	}
	// 'baton service stop': refused for a configured service and an
	// unknown one; stops the removed one's app, once.
	for _, c := range []struct {
		name string
		code int
		want string
	}{
		{"shop", 1, "remove it from the config file"},
		{"nope", 2, "shop-admin"},
		{"shop-admin", 0, "stopped 1 app instance(s) of the removed service shop-admin"},
		{"shop-admin", 2, "none"},
	} {
		if out, code := b.cli("service", "stop", c.name); code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("baton service stop %s exited %d; want %d and %q:\n%s", c.name, code, c.code, c.want, out)
		}
	}
	waitGone(t, adminPID, 10*time.Second)
	// The new service is routed and deployable at once.
	// Before its first deploy nothing listens on its live colour: baton
	// answers itself (502 once the retries are spent), as a service given
	// by flags does before its app starts.
	if code, _, v := getVia(t, b.http, blog.host, "/"); code != http.StatusBadGateway || v != "" {
		t.Errorf("blog before its first deploy: %d from %q; want baton's 502", code, v)
	}
	b.deployService(blog, "blog-v1")
	if code, _, v := getVia(t, b.http, blog.host, "/"); code != 200 || v != "blog-v1" {
		t.Errorf("blog after its deploy: %d from %q", code, v)
	}
	// The changed service still serves, and deploys with its new settings.
	b.deployService(api, "api-v2")

	// A file with two errors changes nothing and names both lines.
	bad := servicesFile + blog.yaml() + "    health_passes: many\n" +
		"  shop:\n    hosts: [blog.example.com]\n    blue: " + svcs[0].blue + "\n    green: " + svcs[0].green + "\n"
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = b.cli("reload")
	if code == 0 {
		t.Errorf("reload of a bad file exited 0:\n%s", out)
	}
	for _, want := range []string{"baton.yaml:" + strconv.Itoa(lineOf(bad, "health_passes: many")), "blog.example.com"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload of a bad file does not report %q:\n%s", want, out)
		}
	}
	if live := b.liveVersions(); live["api"] != "api-v2" || live["blog"] != "blog-v1" || live["shop"] != "shop-v1" {
		t.Errorf("after a rejected reload the services are %v", live)
	}

	time.Sleep(300 * time.Millisecond)
	stopLoad()
	loads.Wait()
	for i, s := range svcs[:2] {
		t.Logf("%s: %s", s.name, reports[i].Summary())
		failOnFailures(t, reports[i], s.name+": ", b.proc.out.String())
	}
	// The streams kept going through both reloads and the deploys of others.
	sse.expect(t, 10)
	echo("after the reloads")
}

// lineOf returns the 1-based number of the first line of text containing s.
func lineOf(text, s string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	return 0
}

// appPID returns the PID of the live instance of service name.
func appPID(t *testing.T, b *baton, name string) int {
	t.Helper()
	resp, err := b.services()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range resp.Services {
		for _, u := range s.Upstreams {
			if s.Name == name && u.Color == s.Live && u.Instance != nil {
				return u.Instance.PID
			}
		}
	}
	t.Fatalf("service %s has no live instance: %+v", name, resp.Services)
	return 0
}

// getVia sends GET path with Host host to addr on a new connection and
// returns the status, body and the answering version.
func getVia(t *testing.T, addr, host, path string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, _ := bufio.NewReader(resp.Body).ReadString(0)
	return resp.StatusCode, strings.TrimSpace(body), resp.Header.Get("X-App-Version")
}

// sseStream is an open Server-Sent Events stream whose events a goroutine
// counts.
type sseStream struct {
	mu     sync.Mutex
	events int
	err    error
	cond   chan struct{} // closed and replaced on every event
}

func openSSE(t *testing.T, addr, host, path string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatalf("open SSE stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("open SSE stream: %s", resp.Status)
	}
	s := &sseStream{cond: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				s.mu.Lock()
				s.events++
				close(s.cond)
				s.cond = make(chan struct{})
				s.mu.Unlock()
			}
		}
		s.mu.Lock()
		s.err = fmt.Errorf("stream ended after %d events: %v", s.events, sc.Err())
		close(s.cond)
		s.mu.Unlock()
	}()
	return s
}

// expect waits (bounded) until n more events have arrived and fails the
// test if the stream ends first.
func (s *sseStream) expect(t *testing.T, n int) {
	t.Helper()
	s.mu.Lock()
	want := s.events + n
	s.mu.Unlock()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got, err, cond := s.events, s.err, s.cond
		s.mu.Unlock()
		switch {
		case got >= want:
			return
		case err != nil:
			t.Fatalf("SSE stream: %v", err)
		}
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("SSE stream: %d events in 10 s; want %d", got, want)
		}
	}
}

// TestDemo runs the README's first command as a newcomer would (here with
// fewer deploys): baton demo serves three services from its embedded config
// file, deploys round them under load, loses no request, and leaves no
// process behind.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	p := start(t, nil, batonBin, "demo", "--deploys", "3", "--rate", "150", "--startup-delay", "200ms",
		"--plot", filepath.Join(dir, "timeline.svg"))
	p.waitExit(t, 90*time.Second)
	out := p.out.String()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("baton demo exited %d:\n%s", code, out)
	}
	for _, want := range []string{"services:", "path_prefix: /admin", "result: 3 deploys over 3 services",
		"shop-v2 (", "api-v2 (", "shop-admin-v2 (", "stopped baton and the 3 app instances"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, s := range []string{"shop", "api", "shop-admin"} {
		if fi, err := os.Stat(filepath.Join(dir, "timeline-"+s+".svg")); err != nil || fi.Size() == 0 {
			t.Errorf("no timeline plot of %s: %v", s, err)
		}
	}
	// Every instance a deploy started (their PIDs are in the output) is gone.
	started := regexp.MustCompile(`started pid (\d+);`).FindAllStringSubmatch(out, -1)
	if len(started) != 6 {
		t.Errorf("the demo started %d app instances; want 6 (3 first deploys, 3 more)", len(started))
	}
	for _, m := range started {
		if pid, _ := strconv.Atoi(m[1]); !gone(pid) {
			t.Errorf("app pid %d still runs after the demo", pid)
		}
	}
}

// TestRemovedServiceStoppedAfterRestart: a service taken out of the config
// file while baton was down (or removed by a reload before a restart)
// leaves its app running, and after the restart 'baton service stop'
// still knows it: it stops that app, as it does right after a reload.
func TestRemovedServiceStoppedAfterRestart(t *testing.T) {
	svcs := newServices(t)[:2] // shop, api
	file := filepath.Join(t.TempDir(), "baton.yaml")
	writeServicesFile(t, file, svcs)
	b := newBaton(t, "--config", file)
	b.start()
	for _, s := range svcs {
		b.deployService(s, s.name+"-v1")
	}
	apiPID := appPID(t, b, "api")

	writeServicesFile(t, file, svcs[:1])
	b.proc.cmd.Process.Signal(syscall.SIGTERM)
	b.proc.waitExit(t, 15*time.Second)
	b.start()
	if gone(apiPID) {
		t.Fatal("the restart stopped the removed service's app; it is the operator's to stop")
	}
	if code, _, v := getVia(t, b.http, svcs[1].host, "/"); code != http.StatusNotFound {
		t.Errorf("the removed service after the restart: %d from %q; want 404", code, v)
	}
	out, code := b.cli("service", "stop", "api")
	if code != 0 || !strings.Contains(out, "stopped 1 app instance(s) of the removed service api") {
		t.Fatalf("baton service stop api after a restart exited %d:\n%s\nbaton log:\n%s", code, out, b.proc.out.String())
	}
	waitGone(t, apiPID, 10*time.Second)
	if code, _, v := getVia(t, b.http, svcs[0].host, "/"); code != 200 || v != "shop-v1" {
		t.Errorf("shop after stopping api: %d from %q; want shop-v1", code, v)
	}
}
