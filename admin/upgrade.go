package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// Upgrader replaces the running baton with the binary now at its path,
// handing over the listening sockets. Upgrade returns once the new process
// is ready (nil) or has failed, in which case this process keeps serving.
type Upgrader interface {
	Upgrade(ctx context.Context, emit func(switcher.Event)) error
}

// upgradeRequest is the body of POST /v1/upgrade; it has no fields yet, but
// unknown ones are refused like everywhere else.
type upgradeRequest struct{}

func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) error {
	var body upgradeRequest
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	st := newStream(w)
	start := time.Now()
	err := s.cfg.Upgrade.Upgrade(r.Context(), st.send)
	if err != nil && !st.started {
		if errors.Is(err, switcher.ErrBusy) {
			return withStatus(http.StatusConflict, err)
		}
		return err
	}
	ok := err == nil
	last := StreamLine{Event: switcher.Event{Time: time.Now().UTC(), Step: "done",
		Message: "upgraded in " + time.Since(start).Round(time.Millisecond).String()}, OK: &ok}
	if err != nil {
		last.Step, last.Message, last.Error = "failed", "upgrade failed; this baton keeps serving", err.Error()
	}
	st.line(last)
	return nil
}
