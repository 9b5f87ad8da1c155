package switcher

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// StopInstances stops every app instance baton launched (or adopted) for
// this service, on both colours, whatever NoStop says, and forgets them in
// the state. It is for a service that no longer takes requests (a reload
// removed it: 'baton service stop'); on a routed service it would cut the
// live app off, so the caller makes sure it is not routed. It takes the
// operation lock like a deploy (ErrBusy if one runs) and returns how many
// instances it stopped; a colour whose app could not be stopped is an
// error naming it, after the others were tried.
func (s *Switcher) StopInstances(ctx context.Context, emit func(Event)) (int, error) {
	release, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer release()
	started := time.Now()
	ev, end := s.begin("stop", newID(), s.Live(), started, emit)
	defer end()
	var (
		stopped int
		failed  []string
	)
	for _, c := range Colors {
		p := s.process(c)
		if p == nil {
			continue // nothing baton launched; what else listens there is not baton's to stop
		}
		t := time.Now()
		desc, err := p.Stop(ctx, syscall.SIGTERM, s.cfg.StopTimeout)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c, err))
			ev("stop", fmt.Sprintf("could not stop %s's app: %v", c, err), time.Since(t))
			continue
		}
		s.forget(c)
		stopped++
		ev("stop", fmt.Sprintf("%s: %s", c, desc), time.Since(t))
	}
	if serr := s.save(); serr != nil {
		ev("persist", fmt.Sprintf("could not save the state (%v): a restart of baton would think the stopped instances still run", serr), 0)
	}
	if len(failed) > 0 {
		return stopped, fmt.Errorf("stopped %d instance(s); %d could not be stopped: %v", stopped, len(failed), failed)
	}
	if stopped == 0 {
		ev("stop", "no app instance of baton's to stop", 0)
	}
	return stopped, nil
}
