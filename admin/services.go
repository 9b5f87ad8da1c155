package admin

import (
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// Service is one service as the admin API drives it: a name, the
// switcher of its blue/green pair and its deploy settings.
type Service struct {
	// Name is the service's name, as in /v1/services/{name}/...
	Name string
	// Routing says which requests the service takes, for display only;
	// the zero value shows as every host.
	Routing Routing
	// Controller is the service's switcher. The deploy, rollback and
	// rollout endpoints are served for it when it is also a Deployer,
	// Rollbacker or Roller; otherwise they answer 404.
	Controller Controller
	// Deploy configures this service's deploys: its own upload directory
	// and artifact limit.
	Deploy DeployConfig
}

// Routing is the part of a service's configuration that picks its
// requests, as GET /v1/services shows it.
type Routing struct {
	// Hosts are the host names the service claims; empty means it is the
	// default service, which takes every host no other service claims.
	Hosts []string `json:"hosts,omitempty"`
	// PathPrefix, if set, limits the service to paths under it.
	PathPrefix string `json:"path_prefix,omitempty"`
}

// String returns r for a table: "a.example,b.example/admin", "*" for
// every host.
func (r Routing) String() string {
	h := strings.Join(r.Hosts, ",")
	if h == "" {
		h = "*"
	}
	return h + r.PathPrefix
}

// Services is the set of services the admin API drives. The set may change
// between two calls (a reload adds or removes services); an implementation
// must be safe for concurrent use.
type Services interface {
	// List returns every service, sorted by name.
	List() []Service
	// Lookup returns the service called name, if there is one.
	Lookup(name string) (Service, bool)
}

// One returns the Services of a baton with svc as its only service.
func One(svc Service) Services { return one{svc} }

type one struct{ svc Service }

func (o one) List() []Service { return []Service{o.svc} }

func (o one) Lookup(name string) (Service, bool) { return o.svc, name == o.svc.Name }

// serviceHandler is a handler of one service's endpoint.
type serviceHandler func(w http.ResponseWriter, r *http.Request, svc Service) error

// named serves fn for the service the path names ({name}); an unknown
// name is a 404 that lists the services.
func (s *Server) named(fn serviceHandler) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		svc, ok := s.svcs.Lookup(name)
		if !ok {
			list := s.svcs.List()
			return withFields(http.StatusNotFound, fmt.Errorf("no service %q; the services are %s", name, nameList(list)),
				map[string]any{"services": names(list)})
		}
		return fn(w, r, svc)
	}
}

// legacy serves fn, on one of the routes that predate services
// (/v1/status, /v1/switch, ...), for the only service; with several it
// is a 400 that names them and the route to use instead.
func (s *Server) legacy(fn serviceHandler) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		list := s.svcs.List()
		switch len(list) {
		case 1:
			return fn(w, r, list[0])
		case 0:
			return withStatus(http.StatusNotFound, fmt.Errorf("%s %s: this baton has no services", r.Method, r.URL.Path))
		}
		rest := strings.TrimPrefix(r.URL.Path, "/v1/")
		return withFields(http.StatusBadRequest,
			fmt.Errorf("%s %s: several services (%s): say which with %s /v1/services/{name}/%s", r.Method, r.URL.Path, strings.Join(names(list), ", "), r.Method, rest),
			map[string]any{"services": names(list)})
	}
}

func names(list []Service) []string {
	out := make([]string, len(list))
	for i, svc := range list {
		out[i] = svc.Name
	}
	return out
}

// nameList is "a, b and c" (or "none").
func nameList(list []Service) string {
	n := names(list)
	switch len(n) {
	case 0:
		return "none"
	case 1:
		return n[0]
	}
	return strings.Join(n[:len(n)-1], ", ") + " and " + n[len(n)-1]
}

// ServicesResponse is the body of GET /v1/services.
type ServicesResponse struct {
	BatonVersion string `json:"baton_version"`
	// PID is the serving baton process; it changes with an upgrade.
	PID      int              `json:"pid"`
	Services []ServiceSummary `json:"services"`
}

// ServiceSummary is one service in GET /v1/services: what a table of
// services shows. GET /v1/services/{name}/status has the rest.
type ServiceSummary struct {
	Name    string  `json:"name"`
	Routing Routing `json:"routing"`
	// Live is the live colour.
	Live string `json:"live"`
	// Upstreams are the colours: address, app instance (its version),
	// health and requests in flight.
	Upstreams []switcher.UpstreamStatus `json:"upstreams"`
	// Operation is the operation running on the service; nil if none.
	Operation *switcher.Operation `json:"operation,omitempty"`
	// Rollout is the service's canary or watch; nil if none.
	Rollout *switcher.RolloutStatus `json:"rollout,omitempty"`
	// LastDeploy is the last switch, deploy, rollout or rollback that
	// ended; nil if none.
	LastDeploy *state.Deploy `json:"last_deploy,omitempty"`
	// StateError is set while the service's state could not be saved.
	StateError string `json:"state_error,omitempty"`
	// Events are the steps of the running operation, or of the last one.
	Events []switcher.Event `json:"events,omitempty"`
	// Probe is what 'baton deploy --probe' saw of the service's last
	// probed deploy, without its plot (GET .../probe has it); nil if none
	// since baton started.
	Probe *ProbeInfo `json:"probe,omitempty"`
	// Recent are the last recentDeploys switches, deploys, rollouts and
	// rollbacks that ended, newest first.
	Recent []state.Deploy `json:"recent,omitempty"`
}

// recentDeploys is how many ended operations a summary lists.
const recentDeploys = 5

// Summarize returns the summary of the service called name in status st.
func Summarize(name string, routing Routing, st switcher.Status) ServiceSummary {
	sum := ServiceSummary{Name: name, Routing: routing, Live: st.Live, Upstreams: st.Upstreams,
		Operation: st.Operation, Rollout: st.Rollout, StateError: st.StateError, Events: st.Events}
	for i := len(st.History) - 1; i >= 0 && len(sum.Recent) < recentDeploys; i-- {
		sum.Recent = append(sum.Recent, st.History[i])
	}
	if n := len(st.History); n > 0 {
		d := st.History[n-1]
		sum.LastDeploy = &d
	}
	return sum
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.servicesResponse())
	return nil
}

// servicesResponse is GET /v1/services's answer, and each event of GET
// /v1/events.
func (s *Server) servicesResponse() ServicesResponse {
	resp := ServicesResponse{BatonVersion: s.cfg.Version, PID: os.Getpid(), Services: []ServiceSummary{}}
	s.probesMu.Lock()
	defer s.probesMu.Unlock()
	for _, svc := range s.svcs.List() {
		sum := Summarize(svc.Name, svc.Routing, svc.Controller.Status())
		if p, ok := s.probes[svc.Name]; ok {
			sum.Probe = &p.ProbeInfo
		}
		resp.Services = append(resp.Services, sum)
	}
	return resp
}

// unsupported is the 404 of an endpoint that svc's controller does not
// implement.
func unsupported(r *http.Request, svc Service, what string) error {
	return withStatus(http.StatusNotFound, fmt.Errorf("%s %s: service %q takes no %s", r.Method, r.URL.Path, svc.Name, what))
}

// serviceOps are the endpoints under /v1/services/{name}/, with their
// method.
var serviceOps = map[string]string{"status": "GET", "switch": "POST", "deploy": "POST", "rollback": "POST", "rollout": "POST",
	"rollout/percent": "POST", "rollout/promote": "POST", "rollout/abort": "POST"}

// serviceOp returns the endpoint p names under /v1/services/{name}/
// ("deploy", "rollout/promote"), if it is one.
func serviceOp(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/v1/services/")
	if !ok {
		return "", false
	}
	name, op, ok := strings.Cut(rest, "/")
	if !ok || name == "" {
		return "", false
	}
	_, known := serviceOps[op]
	return op, known
}
