package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// Reloader reads baton's config file again and applies it: services are
// added, removed or changed in place, and those whose settings did not
// change are not touched.
//
// Reload returns an error only if it changed nothing. A file with errors
// is such an error: each problem is one error, "baton.yaml:LINE: ...",
// and several are joined with errors.Join. The admin API answers it 400
// with every problem in "errors" (409 if it wraps switcher.ErrBusy, e.g.
// another reload runs).
type Reloader interface {
	Reload(ctx context.Context) (ReloadReport, error)
}

// ReloadReport says what a reload changed. Each list is sorted by name.
type ReloadReport struct {
	// File is the config file that was read, for messages; may be empty.
	File      string           `json:"file,omitempty"`
	Added     []string         `json:"added"`
	Removed   []RemovedService `json:"removed"`
	Changed   []string         `json:"changed"`
	Unchanged []string         `json:"unchanged"`
	// Rerouted lists the unchanged services whose hosts or path prefix
	// changed: routed anew, otherwise untouched.
	Rerouted []string `json:"rerouted,omitempty"`
	// NeedRestart lists the top-level settings that changed in the file
	// (listen addresses, TLS, admin, state directory): a reload applies
	// only services; these take effect at the next start or 'baton
	// upgrade'.
	NeedRestart []string `json:"need_restart,omitempty"`
}

// RemovedService is a service a reload removed. It takes no new requests;
// its requests in flight finish; its app instances are left running, for
// the operator to stop.
type RemovedService struct {
	Name string `json:"name"`
	// Instances are the app instances baton had launched for it and left
	// running, by colour; empty if none.
	Instances []LeftInstance `json:"instances,omitempty"`
}

// LeftInstance is an app instance that a reload left running.
type LeftInstance struct {
	Color string `json:"color"`
	state.Instance
}

// ReloadResponse is the body of a successful POST /v1/reload.
type ReloadResponse struct {
	// Message says what changed, in one line for a human.
	Message string `json:"message"`
	ReloadReport
}

// Message returns what r changed in one line, e.g. "baton.yaml: 1 added
// (api), 1 removed (shop-admin: their app instances are left running),
// 2 unchanged".
func (r ReloadReport) Message() string {
	var parts []string
	if len(r.Added) > 0 {
		parts = append(parts, fmt.Sprintf("%d added (%s)", len(r.Added), strings.Join(r.Added, ", ")))
	}
	if len(r.Changed) > 0 {
		parts = append(parts, fmt.Sprintf("%d changed (%s)", len(r.Changed), strings.Join(r.Changed, ", ")))
	}
	if len(r.Rerouted) > 0 {
		parts = append(parts, fmt.Sprintf("%d rerouted (%s)", len(r.Rerouted), strings.Join(r.Rerouted, ", ")))
	}
	if len(r.Removed) > 0 {
		var rm, left []string
		for _, s := range r.Removed {
			rm = append(rm, s.Name)
			for _, in := range s.Instances {
				left = append(left, describeInstance(s.Name, in))
			}
		}
		p := fmt.Sprintf("%d removed (%s)", len(r.Removed), strings.Join(rm, ", "))
		if len(left) > 0 {
			p += "; their app instances are left running: " + strings.Join(left, ", ")
		}
		parts = append(parts, p)
	}
	msg := "nothing changed"
	if len(parts) > 0 {
		msg = strings.Join(parts, ", ")
	}
	if len(r.Unchanged) > 0 {
		msg += fmt.Sprintf(", %d unchanged", len(r.Unchanged))
	}
	if len(r.NeedRestart) > 0 {
		msg += "; not applied until the next start or 'baton upgrade': " + strings.Join(r.NeedRestart, ", ")
	}
	if r.File != "" {
		msg = r.File + ": " + msg
	}
	return msg
}

// describeInstance is "shop blue: 1.4.2 pid 1234 on host".
func describeInstance(service string, in LeftInstance) string {
	d := service + " " + in.Color + ":"
	if in.AppVersion != "" {
		d += " " + in.AppVersion
	}
	if in.PID > 0 {
		d += fmt.Sprintf(" pid %d", in.PID)
	}
	if in.Host != "" {
		d += " on " + in.Host
	}
	if in.Addr != "" {
		d += " at " + in.Addr
	}
	return d
}

// reloadRequest is the body of POST /v1/reload; it has no fields yet, but
// unknown ones are refused like everywhere else.
type reloadRequest struct{}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.Reload == nil {
		return withStatus(http.StatusNotFound, errors.New("this baton has no config file to reload: it was started without --config"))
	}
	var body reloadRequest
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	rep, err := s.cfg.Reload.Reload(r.Context())
	if err != nil {
		if full := diskFull(err); full != nil {
			return full
		}
		problems := Problems(err)
		code := http.StatusBadRequest
		if errors.Is(err, switcher.ErrBusy) {
			code = http.StatusConflict
		}
		s.logger.Warn("reload refused; nothing changed", "problems", len(problems), "err", err)
		return withFields(code, errors.New(problems[0]), map[string]any{"errors": problems})
	}
	s.logger.Info("reloaded", "added", rep.Added, "removed", len(rep.Removed), "changed", rep.Changed, "unchanged", len(rep.Unchanged))
	writeJSON(w, http.StatusOK, ReloadResponse{Message: rep.Message(), ReloadReport: rep})
	return nil
}

// Problems returns the problems err reports, one a string: the parts of an
// errors.Join (nested ones too), each line of a message on its own. It
// returns at least one.
func Problems(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, p := range j.Unwrap() {
				walk(p)
			}
			return
		}
		for line := range strings.SplitSeq(e.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, line)
			}
		}
	}
	walk(err)
	if len(out) == 0 {
		out = append(out, "reload failed")
	}
	return out
}
