package switcher

import "time"

// Exclusive runs fn as an operation of the given kind (e.g. "upgrade"): it
// holds the same lock as switches and deploys, so none of them can start
// while fn runs, and fn cannot start while one of them runs (ErrBusy). fn
// reports its steps through step. If fn returns hold=true the lock is never
// released: the process is handing its work to another one and must not
// start anything new.
func (s *Switcher) Exclusive(kind string, emit func(Event), fn func(step func(step, msg string)) (hold bool, err error)) error {
	release, err := s.acquire()
	if err != nil {
		return err
	}
	id := newID()
	if emit == nil {
		emit = func(Event) {}
	}
	op := &Operation{ID: id, Kind: kind, Started: time.Now().UTC(), Step: "start"}
	s.mu.Lock()
	s.current = op
	s.mu.Unlock()
	hold, err := fn(func(step, msg string) {
		s.mu.Lock()
		op.Step = step
		s.mu.Unlock()
		s.logger.Info(kind+" "+step, "id", id, "msg", msg)
		emit(Event{Time: time.Now().UTC(), Step: step, Message: msg})
	})
	if hold && err == nil {
		return nil
	}
	s.mu.Lock()
	s.current = nil
	s.mu.Unlock()
	release()
	return err
}
