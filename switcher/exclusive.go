package switcher

import "time"

// Exclusive runs fn as an operation of the given kind (e.g. "upgrade"): it
// holds the same lock as switches and deploys, so none of them can start
// while fn runs, and fn cannot start while one of them runs (ErrBusy). fn
// reports its steps through step. If fn returns hold=true the lock is never
// released: the process is handing its work to another one and must not
// start anything new.
func (s *Switcher) Exclusive(kind string, emit func(Event), fn func(step func(step, msg string)) (hold bool, err error)) error {
	op, release, err := s.hold(kind)
	if err != nil {
		return err
	}
	if emit == nil {
		emit = func(Event) {}
	}
	hold, err := fn(func(step, msg string) {
		e := Event{Time: time.Now().UTC(), Step: step, Message: msg}
		s.mu.Lock()
		op.Step = step
		s.addEvent(e)
		s.mu.Unlock()
		s.logger.Info(kind+" "+step, "id", op.ID, "msg", msg)
		emit(e)
	})
	if hold && err == nil {
		return nil
	}
	release()
	return err
}

// Hold takes the operation lock for an operation of the given kind that is
// done outside the switcher, such as a reload replacing or removing its
// service: no deploy, switch or rollout can start until release is
// called, and status shows the operation. It returns ErrBusy, naming the
// operation, if one runs. A switcher whose service was replaced is never
// released: a deploy that found it just before the swap is refused
// instead of running on a service no request reaches.
func (s *Switcher) Hold(kind string) (release func(), err error) {
	_, release, err = s.hold(kind)
	return release, err
}

// hold takes the operation lock and publishes an operation of kind;
// release clears it and gives the lock back.
func (s *Switcher) hold(kind string) (op *Operation, release func(), err error) {
	unlock, err := s.acquire()
	if err != nil {
		return nil, nil, err
	}
	op = &Operation{ID: newID(), Kind: kind, Started: time.Now().UTC(), Step: "start"}
	s.mu.Lock()
	s.current = op
	s.events = nil
	s.mu.Unlock()
	return op, func() {
		s.mu.Lock()
		s.current = nil
		s.mu.Unlock()
		unlock()
	}, nil
}
