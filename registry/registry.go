// Package registry owns the table of services: which services run, each
// with its Handler (its live upstream and canary) and its switcher, and
// the routing table that sends requests to them. It is the one place that
// knows every service.
//
// The model: a configuration is a list of Specs. Apply compares it with
// what runs and builds a new state in full before it changes anything:
// services added or whose settings changed are built (by the caller's
// build function), a new proxy.RouteTable is made from every service's
// route, and only when all of that worked is the table swapped into the
// Router and the old services that are gone or replaced closed. A
// configuration with any problem changes nothing. A service whose
// settings are the same is not touched at all: its Handler, pooled
// connections, WebSockets and streams stay as they are, even when its
// hosts or prefix change (that is only a new routing table).
package registry

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/batonproxy/baton/proxy"
)

// Spec is one service as configured.
type Spec struct {
	// Name names the service: a DNS label (config.ValidServiceName).
	Name string
	// Hosts, PathPrefix and StripPrefix say which requests it takes; see
	// proxy.Route.
	Hosts       []string
	PathPrefix  string
	StripPrefix bool
	// Settings holds everything else about the service (app addresses,
	// health checks, launcher, timeouts), compared with reflect.DeepEqual:
	// equal Settings across a reload keep the running service.
	Settings any
}

// Service is a running service, as the caller's build function makes it.
type Service interface {
	// Handler serves the service's requests.
	Handler() *proxy.Handler
	// Hold takes the service's operation lock for the reload (its
	// switcher's Hold): no deploy, switch or rollout starts on it until
	// release. It fails, naming the operation, if one runs: a busy service
	// is neither replaced nor removed.
	Hold(kind string) (release func(), err error)
	// Close ends the service's background work (health monitor). The
	// app instances it started are left running, and requests already
	// routed to it finish.
	Close()
}

// Entry is a running service with the Spec it was built or last routed
// with.
type Entry[S Service] struct {
	Spec    Spec
	Service S
}

// Report says what Apply did.
type Report struct {
	Added, Removed, Changed, Unchanged []string
	// Rerouted lists the unchanged services whose hosts or prefix
	// changed: routed anew, otherwise untouched.
	Rerouted []string
}

// Registry is the table of running services. It is safe for concurrent
// use; Apply calls run one at a time.
type Registry[S Service] struct {
	router *proxy.Router
	build  func(Spec) (S, error)

	apply sync.Mutex // serialises Apply

	mu       sync.RWMutex
	services map[string]Entry[S]
}

// New returns an empty Registry that routes through router (whose table
// it replaces at each Apply) and builds services with build.
func New[S Service](router *proxy.Router, build func(Spec) (S, error)) *Registry[S] {
	return &Registry[S]{router: router, build: build, services: map[string]Entry[S]{}}
}

// Apply makes specs the running configuration, or changes nothing and
// returns every problem found.
func (r *Registry[S]) Apply(specs []Spec) (Report, error) {
	r.apply.Lock()
	defer r.apply.Unlock()
	r.mu.RLock()
	old := r.services
	r.mu.RUnlock()

	// First what can be checked without building anything: names, busy
	// services, and the routing table (with a stand-in Handler for the
	// services still to build), so that a bad file builds nothing.
	var (
		rep     Report
		errs    []error
		next    = make(map[string]Entry[S], len(specs))
		toBuild []Spec
		stale   []S // old services to close once the new table is in
		// The operation locks of the services replaced and removed, taken
		// before anything is built, so that no deploy starts on a service
		// between the check and the swap. Given back if Apply changes
		// nothing; once it did, a replaced service's is kept for ever (see
		// switcher.Hold) and a removed one's given back, for 'baton service
		// stop'.
		replacedHolds, removedHolds []func()
	)
	defer func() { releaseAll(removedHolds) }()
	seen := map[string]bool{}
	standIn := map[string]*proxy.Handler{}
	for _, sp := range specs {
		if seen[sp.Name] {
			errs = append(errs, fmt.Errorf("service %s is defined twice", sp.Name))
			continue
		}
		seen[sp.Name] = true
		cur, exists := old[sp.Name]
		switch {
		case exists && reflect.DeepEqual(cur.Spec.Settings, sp.Settings):
			if sameRoute(cur.Spec, sp) {
				rep.Unchanged = append(rep.Unchanged, sp.Name)
			} else {
				rep.Rerouted = append(rep.Rerouted, sp.Name)
			}
			next[sp.Name] = Entry[S]{Spec: sp, Service: cur.Service}
			continue
		case exists:
			release, err := cur.Service.Hold("reload")
			if err != nil {
				errs = append(errs, fmt.Errorf("service %s: its settings changed while %w; reload again when it has ended", sp.Name, err))
				continue
			}
			replacedHolds = append(replacedHolds, release)
			rep.Changed = append(rep.Changed, sp.Name)
			stale = append(stale, cur.Service)
		default:
			rep.Added = append(rep.Added, sp.Name)
		}
		toBuild = append(toBuild, sp)
		standIn[sp.Name] = proxy.NewHandler(proxy.Options{})
	}
	for name, e := range old {
		if seen[name] {
			continue
		}
		release, err := e.Service.Hold("reload")
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: removed while %w; reload again when it has ended", name, err))
			continue
		}
		removedHolds = append(removedHolds, release)
		rep.Removed = append(rep.Removed, name)
		stale = append(stale, e.Service)
	}
	if len(errs) == 0 {
		_, err := newTable(specs, func(name string) *proxy.Handler {
			if h, ok := standIn[name]; ok {
				return h
			}
			return next[name].Service.Handler()
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		releaseAll(replacedHolds)
		return Report{}, err
	}

	var built []S // closed again if a later build fails
	for _, sp := range toBuild {
		s, err := r.build(sp)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", sp.Name, err))
			continue
		}
		built = append(built, s)
		next[sp.Name] = Entry[S]{Spec: sp, Service: s}
	}
	var table *proxy.RouteTable
	if len(errs) == 0 {
		var err error
		table, err = newTable(specs, func(name string) *proxy.Handler { return next[name].Service.Handler() })
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, s := range built {
			s.Close()
		}
		releaseAll(replacedHolds)
		return Report{}, err
	}
	r.mu.Lock()
	r.services = next
	r.mu.Unlock()
	r.router.SetTable(table)
	for _, s := range stale {
		s.Close()
	}
	for _, l := range [][]string{rep.Added, rep.Removed, rep.Changed, rep.Unchanged, rep.Rerouted} {
		sort.Strings(l)
	}
	return rep, nil
}

func releaseAll(holds []func()) {
	for _, release := range holds {
		release()
	}
}

func sameRoute(a, b Spec) bool {
	return slices.Equal(a.Hosts, b.Hosts) && a.PathPrefix == b.PathPrefix && a.StripPrefix == b.StripPrefix
}

// newTable builds the routing table of specs, each served by the Handler
// handler gives for its name.
func newTable(specs []Spec, handler func(name string) *proxy.Handler) (*proxy.RouteTable, error) {
	routes := make([]proxy.Route, 0, len(specs))
	for _, sp := range specs {
		routes = append(routes, proxy.Route{Service: sp.Name, Hosts: sp.Hosts, PathPrefix: sp.PathPrefix,
			StripPrefix: sp.StripPrefix, Handler: handler(sp.Name)})
	}
	return proxy.NewRouteTable(routes)
}

// Lookup returns the running service called name.
func (r *Registry[S]) Lookup(name string) (Entry[S], bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.services[name]
	return e, ok
}

// List returns the running services, sorted by name.
func (r *Registry[S]) List() []Entry[S] {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry[S], 0, len(r.services))
	for _, e := range r.services {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Spec.Name < out[j].Spec.Name })
	return out
}

// Names returns the running services' names, sorted, joined with ", ".
func (r *Registry[S]) Names() string {
	var names []string
	for _, e := range r.List() {
		names = append(names, e.Spec.Name)
	}
	return strings.Join(names, ", ")
}
