package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/registry"
	"github.com/batonproxy/baton/switcher"
	"github.com/batonproxy/baton/upgrade"
)

// upgradeConfig holds the flags of baton's own in-place upgrade.
type upgradeConfig struct {
	PIDFile string
	Timeout time.Duration
	// inProcess is set by tests that run serve in the test process: only
	// one upgrader may exist per process, so they run without one.
	inProcess bool
}

// open returns the process's upgrader, or nil when upgrades are off.
func (c *upgradeConfig) open() (*upgrade.Upgrader, error) {
	if c.inProcess {
		return nil, nil
	}
	return upgrade.New(c.PIDFile, c.Timeout)
}

func (c *upgradeConfig) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.PIDFile, "pid-file", os.Getenv("BATON_PID_FILE"), "write the serving process's PID to `file` (for systemd's PIDFile= across upgrades) [$BATON_PID_FILE]")
	fs.DurationVar(&c.Timeout, "upgrade-timeout", upgrade.DefaultTimeout, "how long a new baton may take to become ready during 'baton upgrade'")
}

// selfUpgrade runs an upgrade of baton itself as an exclusive operation of
// every service's switcher: no deploy or switch can run during it, it is
// refused while one runs, and none can start in this process after it
// succeeded.
type selfUpgrade struct {
	upg    *upgrade.Upgrader
	reg    *registry.Registry[*service]
	logger *slog.Logger
}

// Upgrade runs one upgrade, asked for over the admin API or by signal. A
// failure is logged here, whoever asked: the CLI (or systemctl reload) sees
// the error, but baton's own log is where an operator looks afterwards.
func (u *selfUpgrade) Upgrade(ctx context.Context, emit func(switcher.Event)) error {
	err := u.upgrade(ctx, emit)
	if err != nil {
		u.logger.Error("upgrade failed; this baton keeps serving", "pid", os.Getpid(), "err", err)
	}
	return err
}

func (u *selfUpgrade) upgrade(ctx context.Context, emit func(switcher.Event)) error {
	return exclusiveAll(u.reg.List(), "upgrade", emit, func(step func(string, string)) (bool, error) {
		step("start", fmt.Sprintf("starting the baton binary at %s (this is pid %d, version %s) with the listening sockets", os.Args[0], os.Getpid(), version))
		if err := u.upg.Upgrade(ctx); err != nil {
			return false, fmt.Errorf("new baton did not become ready: %w", err)
		}
		step("ready", fmt.Sprintf("the new baton serves; pid %d stops accepting and finishes its requests in flight", os.Getpid()))
		return true, nil
	})
}

// exclusiveAll runs fn as an exclusive operation of every service's
// switcher (switcher.Exclusive), taking their locks one after another. A
// service with an operation running refuses it (switcher.ErrBusy, naming
// the service), and the locks already taken are given back. Only the last
// switcher reports fn's steps to emit.
func exclusiveAll(entries []registry.Entry[*service], kind string, emit func(switcher.Event), fn func(step func(string, string)) (bool, error)) error {
	if len(entries) == 0 {
		_, err := fn(func(string, string) {})
		return err
	}
	e := entries[0]
	var err error
	if len(entries) == 1 {
		err = e.Service.sw.Exclusive(kind, emit, fn)
	} else {
		err = e.Service.sw.Exclusive(kind, nil, func(func(string, string)) (bool, error) {
			held := false
			inner := exclusiveAll(entries[1:], kind, emit, func(step func(string, string)) (bool, error) {
				hold, err := fn(step)
				held = hold && err == nil
				return hold, err
			})
			return held, inner
		})
	}
	if errors.Is(err, switcher.ErrBusy) && !strings.Contains(err.Error(), "service ") && len(entries) > 0 {
		return fmt.Errorf("service %s: %w", e.Spec.Name, err)
	}
	return err
}

// upgradeOnSignal upgrades on SIGHUP or SIGUSR2 (nginx uses USR2; systemd's
// ExecReload sends HUP) until ctx is done.
func (u *selfUpgrade) upgradeOnSignal(ctx context.Context) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			u.logger.Info("upgrade requested by signal", "signal", sig.String())
			_ = u.Upgrade(ctx, nil) // logged by Upgrade
		}
	}
}
