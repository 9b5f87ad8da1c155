package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// fakeServices is a table of services that a test can change, as a
// reload would.
type fakeServices struct {
	mu   sync.Mutex
	svcs map[string]Service
}

func newFakeServices(svcs ...Service) *fakeServices {
	f := &fakeServices{svcs: map[string]Service{}}
	for _, s := range svcs {
		f.svcs[s.Name] = s
	}
	return f
}

func (f *fakeServices) List() []Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Service
	for _, s := range f.svcs {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (f *fakeServices) Lookup(name string) (Service, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.svcs[name]
	return s, ok
}

// blockingDeployer is a service whose deploy runs until release is
// closed; while it runs, its status shows the operation, as the
// switcher's does.
type blockingDeployer struct {
	fakeDeployer
	started chan struct{}
	release chan struct{}
}

func newBlockingDeployer() *blockingDeployer {
	return &blockingDeployer{started: make(chan struct{}), release: make(chan struct{})}
}

func (b *blockingDeployer) Deploy(ctx context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	b.busy.Store(true)
	defer b.busy.Store(false)
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "deploy " + req.Version})
	close(b.started)
	<-b.release
	return switcher.DeployResult{Result: switcher.Result{ID: "slow", From: switcher.Blue, To: switcher.Green}, Version: req.Version}, nil
}

// threeServices returns a server for api, shop and shop-admin, each with a
// fakeRoller of its own.
func threeServices(t *testing.T) (*httptest.Server, map[string]*fakeRoller) {
	t.Helper()
	ctls := map[string]*fakeRoller{"api": {}, "shop": {}, "shop-admin": {}}
	svcs := newFakeServices(
		Service{Name: "shop", Controller: ctls["shop"], Routing: Routing{Hosts: []string{"shop.example.com", "www.shop.example.com"}}},
		Service{Name: "api", Controller: ctls["api"], Routing: Routing{Hosts: []string{"api.example.com"}}},
		Service{Name: "shop-admin", Controller: ctls["shop-admin"], Routing: Routing{Hosts: []string{"shop.example.com"}, PathPrefix: "/admin"}},
	)
	srv := httptest.NewServer(New(Config{Token: "t", Version: "test"}, svcs))
	t.Cleanup(srv.Close)
	return srv, ctls
}

func TestServicesList(t *testing.T) {
	srv, _ := threeServices(t)
	code, body, _ := call(t, "GET", srv.URL+"/v1/services", "t", "")
	var resp ServicesResponse
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
		t.Fatalf("GET /v1/services: %d %s", code, body)
	}
	var got []string
	for _, s := range resp.Services {
		got = append(got, s.Name+" "+s.Routing.String()+" "+s.Live)
		if len(s.Upstreams) != 1 || s.Upstreams[0].Addr != "127.0.0.1:8080" {
			t.Errorf("service %s: upstreams %+v; want the controller's", s.Name, s.Upstreams)
		}
	}
	want := []string{"api api.example.com blue", "shop shop.example.com,www.shop.example.com blue", "shop-admin shop.example.com/admin blue"}
	if !slices.Equal(got, want) {
		t.Errorf("services %q; want %q", got, want)
	}
	if resp.BatonVersion != "test" || resp.PID == 0 {
		t.Errorf("baton_version %q pid %d; want test and this process", resp.BatonVersion, resp.PID)
	}
}

func TestSummarizeTakesTheLastDeploy(t *testing.T) {
	st := switcher.Status{Live: "green", History: []state.Deploy{{ID: "a", Version: "v1"}, {ID: "b", Version: "v2"}},
		Operation: &switcher.Operation{ID: "c", Kind: "deploy"}}
	sum := Summarize("shop", Routing{}, st)
	if sum.LastDeploy == nil || sum.LastDeploy.ID != "b" || sum.Operation == nil || sum.Live != "green" {
		t.Errorf("summary %+v; want last deploy b, the running operation, live green", sum)
	}
	if sum := Summarize("shop", Routing{}, switcher.Status{}); sum.LastDeploy != nil {
		t.Errorf("summary without history has last deploy %+v; want none", sum.LastDeploy)
	}
}

// Each named route drives its own service and no other.
func TestNamedRoutesDriveTheirService(t *testing.T) {
	srv, ctls := threeServices(t)
	code, body, _ := call(t, "GET", srv.URL+"/v1/services/shop-admin/status", "t", "")
	var st StatusResponse
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Service != "shop-admin" || st.Live != "blue" {
		t.Fatalf("GET /v1/services/shop-admin/status: %d %s; want the status of shop-admin", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/services/shop/switch", "t", `{"to":"green"}`); code != 200 || !strings.Contains(body, `"ok": true`) && !strings.Contains(body, `"ok":true`) {
		t.Fatalf("POST /v1/services/shop/switch: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/services/api/rollout", "t", `{"version":"v2","steps":[10]}`); code != 200 {
		t.Fatalf("POST /v1/services/api/rollout: %d %s", code, body)
	}
	if code, body, _ := call(t, "POST", srv.URL+"/v1/services/api/rollout/percent", "t", `{"percent":40}`); code != 200 {
		t.Fatalf("POST /v1/services/api/rollout/percent: %d %s", code, body)
	}
	for name, c := range ctls {
		wantSwitches, wantRollouts := 0, 0
		if name == "shop" {
			wantSwitches = 1
		}
		if name == "api" {
			wantRollouts = 1
		}
		if len(c.calls) != wantSwitches || len(c.rollouts) != wantRollouts || len(c.steers) != wantRollouts {
			t.Errorf("service %s got %d switches, %d rollouts, %d steers; want %d, %d, %d", name,
				len(c.calls), len(c.rollouts), len(c.steers), wantSwitches, wantRollouts, wantRollouts)
		}
	}
	if got := ctls["api"].steers; len(got) == 1 && got[0].Percent != 40 {
		t.Errorf("api steered to %d%%; want 40", got[0].Percent)
	}
}

func TestUnknownServiceIs404ListingTheServices(t *testing.T) {
	srv, ctls := threeServices(t)
	for _, ep := range []struct{ method, path string }{
		{"GET", "/v1/services/nope/status"},
		{"POST", "/v1/services/nope/switch"},
		{"POST", "/v1/services/nope/deploy"},
		{"POST", "/v1/services/nope/rollback"},
		{"POST", "/v1/services/nope/rollout/promote"},
	} {
		code, body, _ := call(t, ep.method, srv.URL+ep.path, "t", "")
		if code != http.StatusNotFound {
			t.Errorf("%s %s: %d; want 404", ep.method, ep.path, code)
			continue
		}
		var e struct {
			Error    string   `json:"error"`
			Services []string `json:"services"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("%s %s: %s is not JSON", ep.method, ep.path, body)
		}
		if want := `no service "nope"; the services are api, shop and shop-admin`; e.Error != want {
			t.Errorf("%s %s: error %q; want %q", ep.method, ep.path, e.Error, want)
		}
		if !slices.Equal(e.Services, []string{"api", "shop", "shop-admin"}) {
			t.Errorf("%s %s: services %q; want api, shop, shop-admin", ep.method, ep.path, e.Services)
		}
	}
	for name, c := range ctls {
		if len(c.calls)+len(c.rollouts)+len(c.steers) != 0 {
			t.Errorf("service %s was driven by a request for another", name)
		}
	}
}

// The routes without a service name drive nothing while several services
// exist: they say which services there are and which route to use.
func TestLegacyRoutesWithSeveralServicesAre400(t *testing.T) {
	srv, ctls := threeServices(t)
	for _, ep := range []struct{ method, path, body, use string }{
		{"GET", "/v1/status", "", "GET /v1/services/{name}/status"},
		{"POST", "/v1/switch", `{"to":"green"}`, "POST /v1/services/{name}/switch"},
		{"POST", "/v1/deploy", `{"version":"v2"}`, "POST /v1/services/{name}/deploy"},
		{"POST", "/v1/rollback", "", "POST /v1/services/{name}/rollback"},
		{"POST", "/v1/rollout", `{"version":"v2","steps":[10]}`, "POST /v1/services/{name}/rollout"},
		{"POST", "/v1/rollout/promote", "", "POST /v1/services/{name}/rollout/promote"},
	} {
		code, body, _ := call(t, ep.method, srv.URL+ep.path, "t", ep.body)
		if code != http.StatusBadRequest {
			t.Errorf("%s %s: %d %s; want 400", ep.method, ep.path, code, body)
			continue
		}
		msg := errorOf(t, body)
		if !strings.Contains(msg, "several services (api, shop, shop-admin)") || !strings.Contains(msg, ep.use) {
			t.Errorf("%s %s: error %q; want it to name the services and %s", ep.method, ep.path, msg, ep.use)
		}
	}
	for name, c := range ctls {
		if len(c.calls)+len(c.rollouts)+len(c.steers) != 0 {
			t.Errorf("service %s was driven through a route without a name", name)
		}
	}
}

// One operation at a time per service, several services at a time: a
// deploy of api that is still running neither blocks a deploy of shop nor
// lets a second deploy of api start (409 naming the running one).
func TestDeploysOfTwoServicesRunAtTheSameTime(t *testing.T) {
	api, shop := newBlockingDeployer(), &fakeDeployer{}
	svcs := newFakeServices(Service{Name: "api", Controller: api}, Service{Name: "shop", Controller: shop})
	srv := httptest.NewServer(New(Config{}, svcs))
	t.Cleanup(srv.Close)

	apiDone := make(chan []StreamLine)
	go func() {
		resp, err := http.Post(srv.URL+"/v1/services/api/deploy", "application/json", strings.NewReader(`{"version":"a2"}`))
		if err != nil {
			apiDone <- nil
			return
		}
		defer resp.Body.Close()
		var lines []StreamLine
		dec := json.NewDecoder(resp.Body)
		for {
			var l StreamLine
			if dec.Decode(&l) != nil {
				break
			}
			lines = append(lines, l)
		}
		apiDone <- lines
	}()
	select {
	case <-api.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the deploy of api never started")
	}

	code, lines, raw := postDeploy(t, srv.URL+"/v1/services/shop/deploy", "application/json", `{"version":"s2"}`)
	if code != 200 || len(lines) == 0 || lines[len(lines)-1].OK == nil || !*lines[len(lines)-1].OK {
		t.Fatalf("deploy of shop while api deploys: %d\n%s; want it done", code, raw)
	}
	if len(shop.reqs) != 1 || shop.reqs[0].Version != "s2" {
		t.Errorf("shop's deploys %+v; want s2", shop.reqs)
	}

	code, body, _ := call(t, "POST", srv.URL+"/v1/services/api/deploy", "", `{"version":"a3"}`)
	if code != http.StatusConflict {
		t.Fatalf("second deploy of api: %d %s; want 409", code, body)
	}
	if msg := errorOf(t, body); !strings.Contains(msg, "deploy to green") || !strings.Contains(msg, "step health") {
		t.Errorf("409 says %q; want the running deploy's kind, colour and step", msg)
	}

	close(api.release)
	select {
	case lines := <-apiDone:
		if len(lines) == 0 || lines[len(lines)-1].OK == nil || !*lines[len(lines)-1].OK || lines[len(lines)-1].Deploy.Version != "a2" {
			t.Errorf("deploy of api ended with %+v; want a2 done", lines)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deploy of api did not end after its release")
	}
}

// A named deploy or rollout takes an upload into its own service's upload
// directory, like the route without a name.
func TestNamedUploadUsesTheServicesDeployConfig(t *testing.T) {
	apiDir, shopDir := t.TempDir(), t.TempDir()
	api, shop := &fakeDeployer{}, &fakeDeployer{}
	svcs := newFakeServices(Service{Name: "api", Controller: api, Deploy: DeployConfig{UploadDir: apiDir}},
		Service{Name: "shop", Controller: shop, Deploy: DeployConfig{UploadDir: shopDir, MaxArtifactBytes: 4}})
	srv := httptest.NewServer(New(Config{}, svcs))
	t.Cleanup(srv.Close)

	code, _, raw := postDeploy(t, srv.URL+"/v1/services/api/deploy?version=v2&name=app.jar", "application/octet-stream", "JAR-BYTES")
	if code != 200 || len(api.content) != 1 || api.content[0] != "JAR-BYTES" {
		t.Fatalf("upload to api: %d\n%s; the deploy saw %q", code, raw, api.content)
	}
	if !strings.HasPrefix(api.reqs[0].Artifact, apiDir) {
		t.Errorf("api's artifact at %s; want it under api's upload dir %s", api.reqs[0].Artifact, apiDir)
	}
	// shop's own limit applies to shop.
	code, _, raw = postDeploy(t, srv.URL+"/v1/services/shop/deploy?version=v2&name=app.jar", "application/octet-stream", "JAR-BYTES")
	if code != http.StatusRequestEntityTooLarge || len(shop.reqs) != 0 {
		t.Errorf("upload over shop's limit: %d\n%s; want 413 and no deploy", code, raw)
	}
}

func TestServiceRoutesMethodsAndCapabilities(t *testing.T) {
	svcs := newFakeServices(Service{Name: "plain", Controller: &fakeController{}})
	srv := httptest.NewServer(New(Config{Token: "t"}, svcs))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		method, path string
		code         int
		want         string
	}{
		{"GET", "/v1/services/plain/switch", 405, "use POST"},
		{"POST", "/v1/services/plain/status", 405, "use GET"},
		{"POST", "/v1/services", 405, "use GET"},
		{"GET", "/v1/reload", 405, "use POST"},
		{"POST", "/v1/services/plain/deploy", 404, `service "plain" takes no deploys`},
		{"POST", "/v1/services/plain/rollback", 404, `service "plain" takes no rollbacks`},
		{"POST", "/v1/services/plain/rollout/abort", 404, `service "plain" takes no rollouts`},
		{"GET", "/v1/services/plain/nope", 404, "no such endpoint"},
	} {
		code, body, _ := call(t, tc.method, srv.URL+tc.path, "t", `{"version":"v2"}`)
		if code != tc.code {
			t.Errorf("%s %s: %d %s; want %d", tc.method, tc.path, code, body, tc.code)
			continue
		}
		if msg := errorOf(t, body); !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: error %q; want it to say %q", tc.method, tc.path, msg, tc.want)
		}
	}
}

// A reload can remove every service; the routes without a name then say
// so instead of failing.
func TestLegacyRoutesWithNoService(t *testing.T) {
	srv := httptest.NewServer(New(Config{}, newFakeServices()))
	t.Cleanup(srv.Close)
	code, body, _ := call(t, "GET", srv.URL+"/v1/status", "", "")
	if code != http.StatusNotFound || !strings.Contains(errorOf(t, body), "no services") {
		t.Errorf("GET /v1/status without services: %d %s; want 404 saying there are none", code, body)
	}
	code, body, _ = call(t, "GET", srv.URL+"/v1/services", "", "")
	var resp ServicesResponse
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil || resp.Services == nil || len(resp.Services) != 0 {
		t.Errorf("GET /v1/services without services: %d %s; want an empty list", code, body)
	}
}

// fakeReloader answers Reload with rep and err, and counts calls.
type fakeReloader struct {
	mu    sync.Mutex
	rep   ReloadReport
	err   error
	calls int
}

func (f *fakeReloader) Reload(ctx context.Context) (ReloadReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.rep, f.err
}

func TestReloadReportsWhatChanged(t *testing.T) {
	rl := &fakeReloader{rep: ReloadReport{File: "/etc/baton/baton.yaml", Added: []string{"api"}, Changed: []string{"shop"},
		Unchanged: []string{"blog", "docs"}, Rerouted: []string{"docs"},
		Removed: []RemovedService{{Name: "shop-admin", Instances: []LeftInstance{
			{Color: "blue", Instance: state.Instance{AppVersion: "1.2.0", PID: 4242, Addr: "127.0.0.1:7080"}}}}}}}
	srv := httptest.NewServer(New(Config{Token: "t", Reload: rl}, newFakeServices()))
	t.Cleanup(srv.Close)
	code, body, _ := call(t, "POST", srv.URL+"/v1/reload", "t", "")
	var resp ReloadResponse
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
		t.Fatalf("POST /v1/reload: %d %s", code, body)
	}
	want := "/etc/baton/baton.yaml: 1 added (api), 1 changed (shop), 1 rerouted (docs), 1 removed (shop-admin); their app instances are left running: " +
		"shop-admin blue: 1.2.0 pid 4242 at 127.0.0.1:7080, 2 unchanged"
	if resp.Message != want {
		t.Errorf("message %q; want %q", resp.Message, want)
	}
	if len(resp.Removed) != 1 || len(resp.Removed[0].Instances) != 1 || resp.Removed[0].Instances[0].PID != 4242 ||
		!slices.Equal(resp.Added, []string{"api"}) || !slices.Equal(resp.Unchanged, []string{"blog", "docs"}) {
		t.Errorf("report %+v; want the reloader's", resp.ReloadReport)
	}
	if got := (ReloadReport{Unchanged: []string{"a"}}).Message(); got != "nothing changed, 1 unchanged" {
		t.Errorf("message of an empty reload %q; want %q", got, "nothing changed, 1 unchanged")
	}
}

// A file with errors changes nothing and the answer lists every problem.
func TestReloadOfABadFileListsEveryProblem(t *testing.T) {
	problems := []string{
		`baton.yaml:4: services.shop.blue: "nonsense" is not host:port`,
		`baton.yaml:9: services.api: hosts: api.example.com is claimed by shop too`,
		`baton.yaml:17: unknown key "helth_path"; did you mean health_path?`,
	}
	var errs []error
	for _, p := range problems {
		errs = append(errs, errors.New(p))
	}
	for _, tc := range []struct {
		name string
		err  error
		code int
		want []string
	}{
		{"joined", errors.Join(errs...), 400, problems},
		{"joined twice", errors.Join(errs[0], errors.Join(errs[1], errs[2])), 400, problems},
		{"one", errs[0], 400, problems[:1]},
		{"busy", fmt.Errorf("%w: another reload runs", switcher.ErrBusy), 409, []string{switcher.ErrBusy.Error() + ": another reload runs"}},
	} {
		srv := httptest.NewServer(New(Config{Reload: &fakeReloader{err: tc.err}}, newFakeServices()))
		code, body, _ := call(t, "POST", srv.URL+"/v1/reload", "", "")
		srv.Close()
		var e struct {
			Error  string   `json:"error"`
			Errors []string `json:"errors"`
		}
		if code != tc.code || json.Unmarshal([]byte(body), &e) != nil {
			t.Errorf("%s: %d %s; want %d with a JSON error", tc.name, code, body, tc.code)
			continue
		}
		if e.Error != tc.want[0] || !slices.Equal(e.Errors, tc.want) {
			t.Errorf("%s: error %q, errors %q; want %q and %q", tc.name, e.Error, e.Errors, tc.want[0], tc.want)
		}
	}
}

func TestReloadEndpointRefusals(t *testing.T) {
	srv := httptest.NewServer(New(Config{Token: "t"}, newFakeServices()))
	t.Cleanup(srv.Close)
	code, body, _ := call(t, "POST", srv.URL+"/v1/reload", "t", "")
	if code != http.StatusNotFound || !strings.Contains(errorOf(t, body), "without --config") {
		t.Errorf("reload without a reloader: %d %s; want 404 saying there is no config file", code, body)
	}

	rl := &fakeReloader{}
	srv2 := httptest.NewServer(New(Config{Token: "t", Reload: rl}, newFakeServices()))
	t.Cleanup(srv2.Close)
	if code, _, _ := call(t, "POST", srv2.URL+"/v1/reload", "", ""); code != http.StatusUnauthorized {
		t.Errorf("reload without the token: %d; want 401", code)
	}
	if code, body, _ := call(t, "POST", srv2.URL+"/v1/reload", "t", `{"file":"/etc/passwd"}`); code != http.StatusBadRequest {
		t.Errorf("reload with an unknown field: %d %s; want 400", code, body)
	}
	if code, body := sendCrossSite(t, srv2.URL, "t", crossSiteCase{name: "form", path: "/v1/reload", ctype: "text/plain", want: 403}); code != 403 {
		t.Errorf("reload from a form: %d %s; want 403", code, body)
	}
	if rl.calls != 0 {
		t.Errorf("refused reloads reached the reloader %d times", rl.calls)
	}
}

// Two services under one domain (shop and its /admin) get sticky cookies
// of their own, so a client's canary split of one does not decide the
// other's.
func TestStickyCookieIsTheService(t *testing.T) {
	srv, ctls := threeServices(t)
	for _, name := range []string{"shop", "shop-admin"} {
		code, out, _ := call(t, "POST", srv.URL+"/v1/services/"+name+"/rollout", "t", `{"version":"v2","steps":[10],"sticky":true}`)
		if code != 200 {
			t.Fatalf("rollout of %s: %d %s", name, code, out)
		}
		if got, want := ctls[name].rollouts[0].Rules.StickyCookie, "baton_canary_"+name; got != want {
			t.Errorf("%s's sticky cookie %q; want %q", name, got, want)
		}
	}
	if got := switcher.StickyCookieOf(state.DefaultService); got != switcher.DefaultStickyCookie {
		t.Errorf("the default service's sticky cookie %q; want %q as before services", got, switcher.DefaultStickyCookie)
	}
}

type fakeStopper struct {
	removed []string
	stopped []string
}

func (f *fakeStopper) StopService(ctx context.Context, name string, emit func(switcher.Event)) (int, error) {
	if !slices.Contains(f.removed, name) {
		return 0, fmt.Errorf("%w: %s", ErrNotRemoved, name)
	}
	emit(switcher.Event{Step: "stop", Message: "blue: pid 7 exited"})
	f.stopped = append(f.stopped, name)
	f.removed = slices.DeleteFunc(f.removed, func(s string) bool { return s == name })
	return 1, nil
}

func (f *fakeStopper) Removed() []string { return f.removed }

// POST /v1/services/{name}/stop stops a removed service's instances; a
// configured service is refused (409) and an unknown one is a 404 listing
// the removed ones.
func TestStopRemovedService(t *testing.T) {
	st := &fakeStopper{removed: []string{"blog"}}
	svcs := newFakeServices(Service{Name: "shop", Controller: &fakeRoller{}})
	srv := httptest.NewServer(New(Config{Token: "t", Stopper: st}, svcs))
	defer srv.Close()
	for _, c := range []struct {
		name string
		code int
		want string
	}{
		{"shop", 409, "remove it from the config file"},
		{"nope", 404, "not stopped yet are: blog"},
		{"blog", 200, "stopped 1 app instance(s) of the removed service blog"},
		{"blog", 404, "not stopped yet are: none"},
	} {
		code, body, _ := call(t, "POST", srv.URL+"/v1/services/"+c.name+"/stop", "t", "")
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("stop %s: %d %s; want %d and %q", c.name, code, body, c.code, c.want)
		}
	}
	if !slices.Equal(st.stopped, []string{"blog"}) {
		t.Errorf("stopped %v; want [blog]", st.stopped)
	}
}
