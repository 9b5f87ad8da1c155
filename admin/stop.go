package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// ServiceStopper stops the app instances of a service that a reload
// removed ('baton service stop NAME', POST /v1/services/{name}/stop): a
// reload leaves them running, as they are the operator's.
type ServiceStopper interface {
	// StopService stops every instance baton launched for the removed
	// service name and returns how many it stopped. It returns an error
	// wrapping ErrNotRemoved if no service of that name was removed, and
	// switcher.ErrBusy if a stop of it runs already.
	StopService(ctx context.Context, name string, emit func(switcher.Event)) (int, error)
	// Removed lists the services removed whose instances were not stopped
	// yet, sorted.
	Removed() []string
}

// ErrNotRemoved: no service of that name was removed by a reload (or its
// instances were stopped already).
var ErrNotRemoved = errors.New("no removed service of that name")

func (s *Server) stopService(w http.ResponseWriter, r *http.Request) error {
	var body struct{}
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	name := r.PathValue("name")
	if _, ok := s.svcs.Lookup(name); ok {
		// Stopping a routed service's apps would cut its live traffic off.
		return withStatus(http.StatusConflict, fmt.Errorf("service %s is in the config and takes requests: remove it from the config file and run 'baton reload' first, then stop it", name))
	}
	st := newStream(w)
	n, err := s.cfg.Stopper.StopService(r.Context(), name, st.send)
	if err != nil && !st.started {
		switch {
		case errors.Is(err, ErrNotRemoved):
			removed := s.cfg.Stopper.Removed()
			return withFields(http.StatusNotFound, fmt.Errorf("no removed service %q; the services removed by a reload and not stopped yet are: %s", name, orNone(removed)),
				map[string]any{"removed": removed})
		case errors.Is(err, switcher.ErrBusy):
			return withStatus(http.StatusConflict, err)
		}
		return err
	}
	ok := err == nil
	last := StreamLine{Event: switcher.Event{Time: time.Now().UTC(), Step: "done",
		Message: fmt.Sprintf("stopped %d app instance(s) of the removed service %s", n, name)}, OK: &ok}
	if err != nil {
		last.Step, last.Message, last.Error = "failed", "stop of "+name+" failed", err.Error()
	}
	st.line(last)
	return nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
