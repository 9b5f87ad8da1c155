package switcher

import "time"

// Observer is told what the switcher does, e.g. to export metrics. Its
// methods are called synchronously from the switcher's goroutines (a switch,
// Monitor), so they must be quick, must not call back into the Switcher, and
// must be safe for concurrent use.
type Observer interface {
	// HealthCheck is called after each health check of colour c, whether a
	// switch or Monitor ran it, with the check's error (nil if it passed)
	// and duration. A check cut short because its context was cancelled is
	// not reported: it says nothing about the app.
	HealthCheck(c Color, err error, d time.Duration)
	// SwitchDone is called once for every switch that started (one that
	// was refused as busy or already live did not start), with its result
	// and its error, nil on success.
	SwitchDone(res Result, err error)
	// DeployDone is called once for every deploy that started, with the
	// result of its switch and its error, nil on success. A deploy's switch
	// is reported to SwitchDone as well.
	DeployDone(res Result, err error)
	// Live is called when colour c becomes live, at New and after each
	// swap, with the app version recorded for c in the state ("" if none).
	Live(c Color, version string)
}

// LastSwitchObserver is an optional interface of an Observer. LastSwitch
// is called once, at New, with the last successful switch (a deploy's or a
// rollback's included) that the state file's history records, and the time
// it finished; not at all if there is none. Gauges about the last switch
// thus survive a restart or an upgrade of baton instead of reading as zero.
type LastSwitchObserver interface {
	LastSwitch(res Result, finished time.Time)
}

// nopObserver is the Observer used when Config.Observer is nil.
type nopObserver struct{}

func (nopObserver) HealthCheck(Color, error, time.Duration) {}
func (nopObserver) SwitchDone(Result, error)                {}
func (nopObserver) DeployDone(Result, error)                {}
func (nopObserver) Live(Color, string)                      {}

// appVersion returns the app version the state records for c, "" if none.
func (s *Switcher) appVersion(c Color) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Instances[c.String()].AppVersion
}
