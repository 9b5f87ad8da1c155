package registry

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/batonproxy/baton/proxy"
)

// fakeService is a service whose Handler forwards to an app that answers
// with the service's name and build number.
type fakeService struct {
	name   string
	build  int
	h      *proxy.Handler
	busy   string // an operation running: Hold fails
	held   bool   // the reload holds its operation lock
	closed bool
}

func (f *fakeService) Handler() *proxy.Handler { return f.h }
func (f *fakeService) Close()                  { f.closed = true }
func (f *fakeService) Hold(string) (func(), error) {
	switch {
	case f.busy != "":
		return nil, errors.New("a " + f.busy + " is running")
	case f.held:
		return nil, errors.New("a reload is running")
	}
	f.held = true
	return func() { f.held = false }, nil
}

type world struct {
	t      *testing.T
	router *proxy.Router
	reg    *Registry[*fakeService]
	builds int
	fail   string // a service whose build fails
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, router: proxy.NewRouter(nil, nil, nil)}
	w.reg = New(w.router, func(sp Spec) (*fakeService, error) {
		if sp.Name == w.fail {
			return nil, errors.New("cannot start")
		}
		w.builds++
		n := w.builds
		app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(rw, "%s#%d", sp.Name, n)
		}))
		t.Cleanup(app.Close)
		h := proxy.NewHandler(proxy.Options{})
		u, err := proxy.NewUpstream(sp.Name, app.Listener.Addr().String())
		if err != nil {
			return nil, err
		}
		h.Route(u)
		return &fakeService{name: sp.Name, build: n, h: h}, nil
	})
	return w
}

// get returns what the router answers for host and path.
func (w *world) get(host, path string) string {
	w.t.Helper()
	req := httptest.NewRequest("GET", "http://"+host+path, nil)
	rec := httptest.NewRecorder()
	w.router.ServeHTTP(rec, req)
	if rec.Code == 404 {
		w.t.Logf("404 for %s%s: %q", host, path, rec.Body.String())
		return "404"
	}
	return rec.Body.String()
}

func spec(name string, settings string, hosts ...string) Spec {
	return Spec{Name: name, Hosts: hosts, Settings: settings}
}

func TestApplyAddsChangesAndRemoves(t *testing.T) {
	w := newWorld(t)
	rep, err := w.reg.Apply([]Spec{spec("shop", "a", "shop.example"), spec("api", "a", "api.example")})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{Added: []string{"api", "shop"}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("first apply: %+v; want %+v", rep, want)
	}
	if got := w.get("shop.example", "/") + " " + w.get("api.example", "/"); got != "shop#1 api#2" {
		t.Fatalf("routed to %q; want shop#1 api#2", got)
	}
	shop, _ := w.reg.Lookup("shop")
	api, _ := w.reg.Lookup("api")

	// Same settings, one with a new host: nothing rebuilt, routing updated.
	rep, err = w.reg.Apply([]Spec{spec("shop", "a", "shop.example", "www.shop.example"), spec("api", "a", "api.example")})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{Unchanged: []string{"api"}, Rerouted: []string{"shop"}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("reroute: %+v; want %+v", rep, want)
	}
	if got := w.get("www.shop.example", "/"); got != "shop#1" {
		t.Errorf("new host routed to %q; want the same shop#1", got)
	}
	if shop.Service.closed || api.Service.closed || w.builds != 2 {
		t.Errorf("an unchanged service was closed or rebuilt (builds %d)", w.builds)
	}

	// api's settings change: rebuilt, old one closed; shop untouched;
	// admin added.
	rep, err = w.reg.Apply([]Spec{spec("shop", "a", "shop.example", "www.shop.example"), spec("api", "b", "api.example"),
		{Name: "admin", Hosts: []string{"shop.example"}, PathPrefix: "/admin", Settings: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{Added: []string{"admin"}, Changed: []string{"api"}, Unchanged: []string{"shop"}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("change: %+v; want %+v", rep, want)
	}
	if !api.Service.closed || shop.Service.closed {
		t.Errorf("closed: old api %v (want true), shop %v (want false)", api.Service.closed, shop.Service.closed)
	}
	if got := w.get("api.example", "/") + " " + w.get("shop.example", "/admin/x") + " " + w.get("shop.example", "/"); got != "api#3 admin#4 shop#1" {
		t.Errorf("routed to %q; want api#3 admin#4 shop#1", got)
	}

	// Remove api: no longer routed, closed, the others untouched.
	admin, _ := w.reg.Lookup("admin")
	rep, err = w.reg.Apply([]Spec{spec("shop", "a", "shop.example", "www.shop.example"),
		{Name: "admin", Hosts: []string{"shop.example"}, PathPrefix: "/admin", Settings: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{Removed: []string{"api"}, Unchanged: []string{"admin", "shop"}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("remove: %+v; want %+v", rep, want)
	}
	newAPI := w.reg.List()
	if len(newAPI) != 2 || w.get("api.example", "/") != "404" || admin.Service.closed {
		t.Errorf("after removal: %d services, api.example gives %q; want 2 and 404", len(newAPI), w.get("api.example", "/"))
	}
	if w.reg.Names() != "admin, shop" {
		t.Errorf("Names = %q", w.reg.Names())
	}
}

func TestApplyWithProblemsChangesNothing(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reg.Apply([]Spec{spec("shop", "a", "shop.example"), spec("api", "a", "api.example")}); err != nil {
		t.Fatal(err)
	}
	table := w.router.Table()
	shop, _ := w.reg.Lookup("shop")
	cases := map[string]struct {
		specs []Spec
		fail  string
		busy  string
		want  []string
	}{
		"two services claim a host": {
			specs: []Spec{spec("shop", "b", "shop.example"), spec("api", "a", "api.example"), spec("new", "a", "shop.example")},
			want:  []string{"services shop and new both claim host shop.example"},
		},
		"a build fails": {
			specs: []Spec{spec("shop", "a", "shop.example"), spec("api", "b", "api.example"), spec("new", "a", "new.example")},
			fail:  "new",
			want:  []string{"service new: cannot start"},
		},
		"a changed service is busy": {
			specs: []Spec{spec("shop", "b", "shop.example"), spec("api", "a", "api.example")},
			busy:  "deploy",
			want:  []string{"service shop: its settings changed while a deploy is running"},
		},
		"a removed service is busy": {
			specs: []Spec{spec("api", "a", "api.example")},
			busy:  "rollout",
			want:  []string{"service shop: removed while a rollout is running"},
		},
		"a name twice": {
			specs: []Spec{spec("shop", "a", "shop.example"), spec("shop", "a", "x.example"), spec("api", "a", "api.example")},
			want:  []string{"service shop is defined twice"},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			w.fail, shop.Service.busy = c.fail, c.busy
			defer func() { w.fail, shop.Service.busy = "", "" }()
			builds := w.builds
			_, err := w.reg.Apply(c.specs)
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			for _, want := range c.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if w.router.Table() != table {
				t.Error("the routing table was replaced")
			}
			if got := w.get("shop.example", "/") + " " + w.get("api.example", "/"); got != "shop#1 api#2" {
				t.Errorf("routed to %q; want the old services", got)
			}
			if shop.Service.closed {
				t.Error("a running service was closed")
			}
			for _, e := range w.reg.List() {
				if e.Service.build > 2 {
					t.Errorf("service %s was replaced by build %d", e.Spec.Name, e.Service.build)
				}
			}
			if c.fail == "" && w.builds != builds {
				t.Errorf("%d services built for a configuration that could be refused before building", w.builds-builds)
			}
		})
	}
	for _, e := range w.reg.List() {
		if e.Service.held {
			t.Errorf("service %s still held after refused reloads", e.Spec.Name)
		}
	}
}

// TestApplyHoldsWhatItReplaces: a reload holds the operation lock of the
// services it replaces or removes from its check to its swap, so that no
// deploy starts on one in between. A replaced service's lock is kept (a
// deploy that found it just before the swap is refused, not run on a
// service no request reaches); a removed one's is given back, for 'baton
// service stop'; an unchanged one is never held.
func TestApplyHoldsWhatItReplaces(t *testing.T) {
	w := newWorld(t)
	if _, err := w.reg.Apply([]Spec{spec("shop", "v1", "shop.example"), spec("api", "v1", "api.example"), spec("blog", "v1", "blog.example")}); err != nil {
		t.Fatal(err)
	}
	old := map[string]*fakeService{}
	for _, e := range w.reg.List() {
		old[e.Spec.Name] = e.Service
	}
	var heldDuringBuild []string
	inner := w.reg.build
	w.reg.build = func(sp Spec) (*fakeService, error) {
		for name, s := range old {
			if s.held {
				heldDuringBuild = append(heldDuringBuild, name)
			}
		}
		return inner(sp)
	}
	if _, err := w.reg.Apply([]Spec{spec("shop", "v2", "shop.example"), spec("api", "v1", "api.example")}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(heldDuringBuild)
	if strings.Join(heldDuringBuild, ",") != "blog,shop" {
		t.Errorf("held while the new shop was built: %v; want blog (removed) and shop (replaced)", heldDuringBuild)
	}
	if !old["shop"].held || old["blog"].held || old["api"].held {
		t.Errorf("after the reload: shop held %v (want true), blog %v, api %v (want false)", old["shop"].held, old["blog"].held, old["api"].held)
	}
	if _, err := old["shop"].Hold("deploy"); err == nil {
		t.Error("a deploy could start on the replaced shop")
	}
}

func TestFailedBuildClosesWhatItBuilt(t *testing.T) {
	w := newWorld(t)
	var made []*fakeService
	inner := w.reg.build
	w.reg.build = func(sp Spec) (*fakeService, error) {
		s, err := inner(sp)
		if err == nil {
			made = append(made, s)
		}
		return s, err
	}
	w.fail = "b"
	if _, err := w.reg.Apply([]Spec{spec("a", "x", "a.example"), spec("b", "x", "b.example")}); err == nil {
		t.Fatal("Apply succeeded with a failing build")
	}
	if len(made) != 1 || !made[0].closed {
		t.Errorf("built %d; want service a built and closed again", len(made))
	}
	if len(w.reg.List()) != 0 || w.get("a.example", "/") != "404" {
		t.Error("a failed Apply left a service running")
	}
}
