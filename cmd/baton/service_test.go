package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// svcCtl is one service's switcher as the CLI's requests reach it: it
// records each call by kind, and its live colour may be down.
type svcCtl struct {
	mu    sync.Mutex
	calls []string
	down  string // the live colour's health error; "" healthy
}

func (c *svcCtl) record(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, kind)
}

func (c *svcCtl) got() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.calls, " ")
}

func (c *svcCtl) Status() switcher.Status {
	since := time.Now().Add(-time.Minute)
	h := &switcher.Health{Healthy: c.down == "", Error: c.down, Since: since, Checked: time.Now()}
	return switcher.Status{Live: "blue", Upstreams: []switcher.UpstreamStatus{
		{Color: "blue", Addr: "127.0.0.1:8080", Live: true, InFlight: 3, Health: h, Instance: &state.Instance{AppVersion: "1.4.2"}},
		{Color: "green", Addr: "127.0.0.1:8081"},
	}, History: []state.Deploy{{ID: "d1", Kind: "deploy", Version: "1.4.2", From: "green", To: "blue", OK: true, Started: since}}}
}

func (c *svcCtl) Switch(_ context.Context, _ switcher.SwitchRequest, emit func(switcher.Event)) (switcher.Result, error) {
	c.record("switch")
	emit(switcher.Event{Time: time.Now(), Step: "swap", Message: "green is live"})
	return switcher.Result{From: switcher.Blue, To: switcher.Green}, nil
}

func (c *svcCtl) Deploy(_ context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	c.record("deploy " + req.Version)
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "deploy " + req.Version})
	return switcher.DeployResult{Result: switcher.Result{From: switcher.Blue, To: switcher.Green}, Version: req.Version}, nil
}

func (c *svcCtl) Rollback(_ context.Context, emit func(switcher.Event)) (switcher.DeployResult, error) {
	c.record("rollback")
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "rollback"})
	return switcher.DeployResult{Result: switcher.Result{From: switcher.Green, To: switcher.Blue}}, nil
}

func (c *svcCtl) Rollout(_ context.Context, req switcher.RolloutRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	c.record("rollout " + req.Version)
	emit(switcher.Event{Time: time.Now(), Step: "canary", Message: "canary"})
	return switcher.DeployResult{Result: switcher.Result{From: switcher.Blue, To: switcher.Green}, Version: req.Version}, nil
}

func (c *svcCtl) Steer(cmd switcher.RolloutCommand) (switcher.RolloutStatus, error) {
	c.record("steer " + cmd.Action)
	return switcher.RolloutStatus{Phase: "promoting"}, nil
}

// svcTable is a fixed set of services, sorted by name.
type svcTable []admin.Service

func (t svcTable) List() []admin.Service { return t }

func (t svcTable) Lookup(name string) (admin.Service, bool) {
	for _, s := range t {
		if s.Name == name {
			return s, true
		}
	}
	return admin.Service{}, false
}

// serveServices serves the admin API for a service of each name (sorted)
// and points the CLI at it; rl, if set, serves reloads.
func serveServices(t *testing.T, rl admin.Reloader, names ...string) map[string]*svcCtl {
	t.Helper()
	ctls := map[string]*svcCtl{}
	var tab svcTable
	uploads := t.TempDir()
	for _, n := range names {
		ctls[n] = &svcCtl{}
		tab = append(tab, admin.Service{Name: n, Controller: ctls[n], Routing: admin.Routing{Hosts: []string{n + ".example.com"}},
			Deploy: admin.DeployConfig{UploadDir: filepath.Join(uploads, n)}})
	}
	srv := httptest.NewServer(admin.New(admin.Config{Token: "s3cret", Version: "test", Reload: rl}, tab))
	t.Cleanup(srv.Close)
	t.Setenv("BATON_ADMIN", srv.URL)
	t.Setenv("BATON_ADMIN_TOKEN", "s3cret")
	t.Setenv("BATON_ADMIN_TOKEN_FILE", "")
	t.Setenv("BATON_ADMIN_CA", "")
	return ctls
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeArtifact(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.jar")
	if err := os.WriteFile(p, []byte("JAR"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With --service (or -s), every client command drives that service and
// no other.
func TestServiceFlagDrivesThatService(t *testing.T) {
	ctls := serveServices(t, nil, "api", "shop", "shop-admin")
	art := writeArtifact(t)
	for _, tc := range []struct {
		args []string
		want string // shop's calls after the command
	}{
		{[]string{"deploy", "--service", "shop", "--version", "v2", "--artifact", art}, "deploy v2"},
		{[]string{"deploy", "-s", "shop", "--version", "v3"}, "deploy v3"},
		{[]string{"deploy", "-s", "shop", "--version", "v4", "--artifact", art, "--canary", "10"}, "rollout v4"},
		{[]string{"switch", "-s", "shop"}, "switch"},
		{[]string{"rollback", "--service", "shop"}, "rollback"},
		{[]string{"rollout", "-s", "shop", "--promote"}, "steer promote"},
		{[]string{"rollout", "-s", "shop", "--abort"}, "steer abort"},
		{[]string{"rollout", "-s", "shop"}, ""},
		{[]string{"status", "-s", "shop"}, ""},
	} {
		ctls["shop"].calls = nil
		code, out, errOut := runCLI(tc.args...)
		if code != exitOK {
			t.Errorf("baton %v: exit %d\n%s%s", tc.args, code, out, errOut)
			continue
		}
		if got := ctls["shop"].got(); got != tc.want {
			t.Errorf("baton %v: shop got %q; want %q", tc.args, got, tc.want)
		}
	}
	for _, other := range []string{"api", "shop-admin"} {
		if got := ctls[other].got(); got != "" {
			t.Errorf("%s got %q from commands for shop", other, got)
		}
	}
	if code, out, _ := runCLI("status", "-s", "shop"); code != exitOK || !strings.Contains(out, "service: shop   live: blue") {
		t.Errorf("status -s shop: exit %d\n%s; want the status of shop", code, out)
	}
}

// With several services and no --service, a command that drives one
// service does nothing and says which services there are (exit 2).
func TestSeveralServicesNeedTheFlag(t *testing.T) {
	ctls := serveServices(t, nil, "api", "shop", "shop-admin")
	art := writeArtifact(t)
	for _, args := range [][]string{
		{"deploy", "--version", "v2", "--artifact", art},
		{"deploy", "--version", "v2", "--canary", "10"},
		{"switch"},
		{"rollback"},
		{"rollout", "--promote"},
		{"rollout", "--percent", "50"},
		{"rollout"},
	} {
		code, out, errOut := runCLI(args...)
		if want := "baton: several services (api, shop, shop-admin): say which with --service\n"; code != exitUsage || errOut != want {
			t.Errorf("baton %v: exit %d, stderr %q (stdout %q); want exit 2 and %q", args, code, errOut, out, want)
		}
	}
	for name, c := range ctls {
		if got := c.got(); got != "" {
			t.Errorf("%s got %q from commands that named no service", name, got)
		}
	}
}

func TestOneServiceNeedsNoFlag(t *testing.T) {
	ctls := serveServices(t, nil, "default")
	for _, args := range [][]string{{"switch"}, {"switch", "-s", "default"}, {"rollback"}, {"rollout", "--promote"}} {
		if code, out, errOut := runCLI(args...); code != exitOK {
			t.Errorf("baton %v with one service: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	if got, want := ctls["default"].got(), "switch switch rollback steer promote"; got != want {
		t.Errorf("the one service got %q; want %q", got, want)
	}
	code, out, _ := runCLI("status")
	if code != exitOK || !strings.HasPrefix(out, "live: blue") || !strings.Contains(out, "127.0.0.1:8080") {
		t.Errorf("status with one service: exit %d\n%s; want today's status of it", code, out)
	}
	code, out, _ = runCLI("status", "--json")
	var st admin.StatusResponse
	if code != exitOK || json.Unmarshal([]byte(out), &st) != nil || st.Service != "default" || len(st.Upstreams) != 2 {
		t.Errorf("status --json with one service: exit %d\n%s; want GET /v1/status's answer", code, out)
	}
}

func TestUnknownServiceIsMisuse(t *testing.T) {
	serveServices(t, nil, "api", "shop")
	for _, args := range [][]string{{"switch", "-s", "nope"}, {"status", "-s", "nope"}, {"rollout", "-s", "nope"}, {"deploy", "-s", "nope", "--version", "v2"}} {
		code, _, errOut := runCLI(args...)
		if code != exitUsage || !strings.Contains(errOut, "--service nope: no such service; the services are api, shop") {
			t.Errorf("baton %v: exit %d, stderr %q; want exit 2 listing the services", args, code, errOut)
		}
	}
	if code, _, errOut := runCLI("switch", "--service", ""); code != exitUsage || !strings.Contains(errOut, "--service is empty") {
		t.Errorf("switch --service '': exit %d, stderr %q; want exit 2", code, errOut)
	}
}

// baton status without --service shows one line a service, and exits 1
// while the live colour of one of them is down.
func TestStatusTableOfServices(t *testing.T) {
	ctls := serveServices(t, nil, "api", "shop", "shop-admin")
	code, out, errOut := runCLI("status")
	if code != exitOK {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(out, "3 services   (baton test)") || len(lines) < 6 {
		t.Fatalf("status:\n%s\nwant a table of 3 services", out)
	}
	header := strings.Fields(lines[2])
	if want := []string{"SERVICE", "ROUTING", "LIVE", "BLUE", "GREEN", "HEALTH", "IN", "FLIGHT", "LAST", "DEPLOY"}; strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("header %q; want %q", header, want)
	}
	for i, name := range []string{"api", "shop", "shop-admin"} {
		f := strings.Fields(lines[3+i])
		if len(f) < 9 || f[0] != name || f[1] != name+".example.com" || f[2] != "blue" || f[3] != "1.4.2" || f[4] != "-" || f[5] != "healthy" {
			t.Errorf("row of %s: %q", name, lines[3+i])
		}
		if !strings.Contains(lines[3+i], "  3  ") || !strings.Contains(lines[3+i], "deploy 1.4.2 green→blue ok") {
			t.Errorf("row of %s: %q; want 3 in flight and the last deploy", name, lines[3+i])
		}
	}

	ctls["shop"].down = "dial tcp 127.0.0.1:8080: connection refused"
	code, out, errOut = runCLI("status")
	if code != exitFailure || !strings.Contains(out, "DOWN for 1m0s: dial tcp") {
		t.Errorf("status with shop down: exit %d\n%s; want 1 and the table saying DOWN", code, out)
	}
	if want := "baton: service shop: the live colour, blue, is down: dial tcp 127.0.0.1:8080: connection refused\n"; errOut != want {
		t.Errorf("status with shop down: stderr %q; want %q", errOut, want)
	}
	code, out, _ = runCLI("status", "--json")
	var list admin.ServicesResponse
	if code != exitFailure || json.Unmarshal([]byte(out), &list) != nil || len(list.Services) != 3 {
		t.Errorf("status --json with shop down: exit %d\n%s; want 1 and GET /v1/services's answer", code, out)
	}
	if code, _, _ := runCLI("status", "-s", "api"); code != exitOK {
		t.Errorf("status -s api while shop is down: exit %d; want 0 (api is up)", code)
	}
	if code, _, errOut := runCLI("status", "-s", "shop"); code != exitFailure || !strings.Contains(errOut, "service shop: the live colour, blue, is down") {
		t.Errorf("status -s shop while it is down: exit %d, stderr %q; want 1 saying so", code, errOut)
	}
}

// A baton with one service whose live colour is down: status prints it
// as before and exits 1, so that it works as a monitoring check.
func TestStatusOfOneServiceExits1WhenLiveIsDown(t *testing.T) {
	ctls := serveServices(t, nil, "default")
	ctls["default"].down = "status 503"
	code, out, errOut := runCLI("status")
	if code != exitFailure || !strings.Contains(out, "DOWN for") || errOut != "baton: the live colour, blue, is down: status 503\n" {
		t.Errorf("status with the live colour down: exit %d\n%s\nstderr %q; want exit 1", code, out, errOut)
	}
}

// reloader answers as a config file with the given problems would, or
// applies it.
type reloader struct {
	problems []string
}

func (r reloader) Reload(context.Context) (admin.ReloadReport, error) {
	if len(r.problems) > 0 {
		var errs []error
		for _, p := range r.problems {
			errs = append(errs, errors.New(p))
		}
		return admin.ReloadReport{}, errors.Join(errs...)
	}
	return admin.ReloadReport{File: "/etc/baton/baton.yaml", Added: []string{"api"}, Unchanged: []string{"shop"},
		Removed: []admin.RemovedService{{Name: "blog", Instances: []admin.LeftInstance{{Color: "green", Instance: state.Instance{AppVersion: "2.0", PID: 99, Addr: "127.0.0.1:6081"}}}}}}, nil
}

func TestReloadCommand(t *testing.T) {
	serveServices(t, reloader{}, "shop")
	code, out, errOut := runCLI("reload")
	if code != exitOK {
		t.Fatalf("reload: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"reloaded /etc/baton/baton.yaml: 1 added (api), 1 removed (blog); their app instances are left running",
		"added:     api", "removed:   blog", "green 2.0 pid 99 at 127.0.0.1:6081 is left running", "unchanged: shop"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload output:\n%s\nwant %q", out, want)
		}
	}

	problems := []string{`baton.yaml:4: services.shop.blue: "x" is not host:port`, `baton.yaml:12: unknown key "helth_path"`}
	serveServices(t, reloader{problems: problems}, "shop")
	code, out, errOut = runCLI("reload")
	want := "baton: reload refused, nothing changed: 2 problems in the config file:\n  " + problems[0] + "\n  " + problems[1] + "\n"
	if code != exitFailure || errOut != want {
		t.Errorf("reload of a bad file: exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, errOut, want)
	}

	serveServices(t, nil, "shop")
	if code, _, errOut := runCLI("reload"); code != exitFailure || !strings.Contains(errOut, "without --config") {
		t.Errorf("reload of a baton without --config: exit %d, stderr %q", code, errOut)
	}
}

func TestHelpNamesTheServiceFlag(t *testing.T) {
	for _, cmd := range []string{"deploy", "switch", "rollback", "rollout", "status", "probe"} {
		code, out, _ := runCLI(cmd, "--help")
		if code != exitOK || !strings.Contains(out, "-s, --service") {
			t.Errorf("baton %s --help: exit %d; want -s, --service in:\n%s", cmd, code, out)
		}
	}
	if code, out, _ := runCLI("reload", "--help"); code != exitOK || !strings.Contains(out, "every problem") {
		t.Errorf("baton reload --help: exit %d\n%s", code, out)
	}
}

func TestServiceStopMisuse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"service"}, exitUsage, "baton service stop NAME"},
		{[]string{"service", "start", "shop"}, exitUsage, "baton service stop NAME"},
		{[]string{"service", "stop"}, exitUsage, "want a service name"},
		{[]string{"service", "stop", "--json"}, exitUsage, "want a service name"},
		{[]string{"service", "stop", "shop", "api"}, exitUsage, `unexpected argument "api"`},
		{[]string{"service", "stop", "--help"}, exitOK, "a reload leaves them running"},
	} {
		var out bytes.Buffer
		code := run(context.Background(), tc.args, &out, &out)
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("baton %v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out.String(), tc.code, tc.want)
		}
	}
}
