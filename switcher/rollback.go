package switcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/batonproxy/baton/state"
)

// ErrNothingToRollBack: no earlier version can be brought back; the error
// says why.
var ErrNothingToRollBack = errors.New("nothing to roll back to")

// Rollback brings back what was live before the last switch, deploy or
// rollback (Status.Previous), on the idle colour:
//
//   - if the previous instance still runs there (a deploy or switch with
//     NoStop), it switches back to it: health check, swap, drain, stop;
//   - else, if baton launched the previous version and its installed
//     artifact is still there, it deploys that version again from it;
//   - else it fails with ErrNothingToRollBack, saying why.
//
// A second rollback goes back to the version the first one replaced. The
// result's Version is the version rolled back to ("" when switching back to
// an app baton did not launch). It shares Switch's lock. A rollback that
// moved traffic back is reported to the RolloutObserver, if the Observer is
// one, with reason ReasonCommand, as a canary's rollback by command is.
func (s *Switcher) Rollback(ctx context.Context, emit func(Event)) (DeployResult, error) {
	res, err := s.rollback(ctx, emit)
	if err == nil {
		s.rolloutObserver().Rollback(ReasonCommand)
	}
	return res, err
}

func (s *Switcher) rollback(ctx context.Context, emit func(Event)) (DeployResult, error) {
	release, err := s.acquire()
	if err != nil {
		if s.rolloutStatus() != nil {
			// The running canary or watch owns the way back.
			err = fmt.Errorf("%w; to move all traffic back to the old version, run 'baton rollout --abort'", err)
		}
		return DeployResult{}, err
	}
	defer release()

	from := s.Live()
	to := from.Other()
	s.mu.Lock()
	prev := s.st.Previous
	l := s.launch.launcher
	idle := s.launch.procs[to]
	s.mu.Unlock()
	if prev == nil || prev.Color != to.String() {
		return DeployResult{}, fmt.Errorf("%w: no earlier version is recorded (no switch or deploy has moved traffic yet)", ErrNothingToRollBack)
	}
	// planned returns emit with a "plan" event, saying which way the
	// rollback goes, after the operation's start.
	planned := func(msg string) func(Event) {
		s.logger.Info("rollback plan", "plan", msg)
		if emit == nil {
			return nil
		}
		first := true
		return func(e Event) {
			if first && e.Step == "start" {
				first = false
				emit(e)
				emit(Event{Time: time.Now().UTC(), Step: "plan", Message: msg})
				return
			}
			emit(e)
		}
	}

	addr := s.cfg.Addrs[to]
	if prev.Instance == nil {
		// An app baton did not launch: it can only switch back to it.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		herr := s.prober.Check(cctx, addr)
		cancel()
		if herr != nil {
			return DeployResult{}, fmt.Errorf("%w: %s (%s), live before the last switch, does not answer its health check (%v), and baton did not launch it, so it cannot start it again; start it, then run 'baton switch'",
				ErrNothingToRollBack, to, addr, herr)
		}
		res, err := s.runSwitch(ctx, "rollback", from, to, planned(fmt.Sprintf("%s (%s) still answers: switching back to it", to, addr)))
		return DeployResult{Result: res}, err
	}

	version := prev.Instance.AppVersion
	if idle != nil && idle.Record().ID == prev.Instance.ID {
		if ok, aerr := idle.Alive(ctx); ok && aerr == nil {
			res, err := s.runSwitch(ctx, "rollback", from, to, planned(fmt.Sprintf("%s %s (%s) still runs on %s: switching back to it", version, idle, addr, to)))
			return DeployResult{Result: res, Version: version, Instance: idle.Record()}, err
		}
	}
	if l == nil {
		return DeployResult{}, fmt.Errorf("%w: %s's instance of %s is gone, and this baton has no launcher (--run) to start it again", ErrNothingToRollBack, to, version)
	}
	if err := s.artifactThere(prev.Instance); err != nil {
		return DeployResult{}, fmt.Errorf("%w: %s's instance of %s is gone and its artifact cannot be started again: %w; deploy it afresh", ErrNothingToRollBack, to, version, err)
	}
	msg := fmt.Sprintf("%s's instance of %s is gone: starting %s again", to, version, version)
	if prev.Instance.Artifact != "" {
		msg += " from " + prev.Instance.Artifact
	}
	return s.runDeploy(ctx, "rollback", l, DeployRequest{Version: version, Artifact: prev.Instance.Artifact}, true, planned(msg))
}

// artifactThere reports why the installed artifact of rec cannot be used
// again, nil if it can (or the launch command needs none). Only an artifact
// on this machine is checked; one on a remote host is found missing, if it
// is, when its launch fails.
func (s *Switcher) artifactThere(rec *state.Instance) error {
	if err := CheckVersion(rec.AppVersion); err != nil {
		return fmt.Errorf("its recorded version: %w", err)
	}
	if rec.Artifact == "" || rec.Host != "" {
		return nil
	}
	fi, err := os.Stat(rec.Artifact)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", rec.Artifact)
	}
	return nil
}
