package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/launcher"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// launchConfig holds the serve flags for 'baton deploy': how baton starts
// app instances, locally or over SSH, and what the admin API accepts as an
// artifact.
type launchConfig struct {
	Run         string
	RunEnv      []string
	SSH         string
	SSHKey      string
	KnownHosts  string
	SSHInsecure bool
	SSHDir      string
	MaxArtifact sizeFlag
	// RunUser runs locally launched apps as this user (--run-user);
	// runAs is it resolved, by validate.
	RunUser      string
	runAs        *launcher.RunAs
	KeepReleases int
	MaxLogSize   sizeFlag
	KeepLogs     int

	// warnings are what the checks at start found that does not stop
	// baton (an SSH host out of reach), for 'baton status'; shared by the
	// copies of the config.
	warnings *warnList
}

// warnList is a list of warnings, safe for concurrent use.
type warnList struct {
	mu   sync.Mutex
	list []string
}

// Warnings returns the warnings so far.
func (w *warnList) Warnings() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.list)
}

func (w *warnList) add(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, msg)
}

func (c *launchConfig) flags(fs *pflag.FlagSet) {
	c.warnings = &warnList{}
	fs.StringVar(&c.Run, "run", "", "command `template` that starts the app for 'baton deploy', e.g. 'java -jar {artifact} --server.port={port}'; placeholders {artifact} {port} {version} {color}, and $PORT is set (empty: deploys are refused)")
	fs.StringArrayVar(&c.RunEnv, "run-env", nil, "extra `KEY=VALUE` for the app's environment (repeatable)")
	fs.StringVar(&c.SSH, "ssh", "", "start the app on `user@host[:port]` over SSH instead of on this machine")
	fs.StringVar(&c.SSHKey, "ssh-key", os.Getenv("BATON_SSH_KEY"), "SSH private key `file` [$BATON_SSH_KEY]; default: the keys of the ssh-agent at $SSH_AUTH_SOCK")
	fs.StringVar(&c.KnownHosts, "known-hosts", "", "known_hosts `file` that must list the SSH host's key (default ~/.ssh/known_hosts)")
	fs.BoolVar(&c.SSHInsecure, "ssh-insecure-ignore-host-key", false, "accept ANY SSH host key: no protection against a man in the middle; for throwaway test hosts only")
	fs.StringVar(&c.SSHDir, "ssh-dir", launcher.DefaultSSHDir, "`directory` on the SSH host for releases and logs, relative to the login directory unless absolute")
	c.MaxArtifact = admin.DefaultMaxArtifactBytes
	fs.Var(&c.MaxArtifact, "max-artifact-size", "largest artifact the admin API takes as an upload or download, e.g. 512MiB or 2GiB")
	fs.StringVar(&c.RunUser, "run-user", "", "run locally launched apps as this `user` and its group (baton needs root or CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN); over SSH the login user is the app's user")
	fs.IntVar(&c.KeepReleases, "keep-releases", launcher.DefaultKeepReleases, "releases (and their logs) kept after a deploy, besides the live and the previous one")
	c.MaxLogSize = launcher.DefaultMaxLogBytes
	fs.Var(&c.MaxLogSize, "max-log-size", "an app log is cut past this size, e.g. 100MiB (local apps)")
	fs.IntVar(&c.KeepLogs, "keep-logs", launcher.DefaultKeepLogs, "cut-off parts kept of each app log (name.log.1 the newest)")
}

// validate reports every problem with the flags at once.
func (c *launchConfig) validate() error {
	var errs []error
	if c.SSH == "" {
		for name, set := range map[string]bool{"--ssh-key": c.SSHKey != "" && os.Getenv("BATON_SSH_KEY") != c.SSHKey,
			"--known-hosts": c.KnownHosts != "", "--ssh-insecure-ignore-host-key": c.SSHInsecure} {
			if set {
				errs = append(errs, fmt.Errorf("%s needs --ssh", name))
			}
		}
	} else if c.Run == "" {
		errs = append(errs, errors.New("--ssh needs --run: the command that starts the app on the host"))
	}
	if c.SSHInsecure && c.KnownHosts != "" {
		errs = append(errs, errors.New("--ssh-insecure-ignore-host-key and --known-hosts contradict each other"))
	}
	for _, kv := range c.RunEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("--run-env %q: want KEY=VALUE", kv))
		}
	}
	if c.Run != "" {
		if err := launcher.CheckCommand(c.Run); err != nil {
			errs = append(errs, fmt.Errorf("--run: %w", err))
		}
		if err := launcher.CheckPortUse(c.Run); err != nil {
			errs = append(errs, fmt.Errorf("--run: %w", err))
		}
	}
	if c.MaxArtifact <= 0 {
		errs = append(errs, errors.New("--max-artifact-size must be positive"))
	}
	if c.RunUser != "" {
		switch {
		case c.SSH != "":
			errs = append(errs, errors.New("--run-user is for apps on this machine: over --ssh the app runs as the SSH login user; log in as the app's user"))
		case c.Run == "":
			errs = append(errs, errors.New("--run-user needs --run"))
		default:
			r, err := launcher.LookupRunAs(c.RunUser)
			if err != nil {
				errs = append(errs, fmt.Errorf("--run-user: %w", err))
			}
			c.runAs = r
		}
	}
	if c.KeepReleases < 1 {
		errs = append(errs, fmt.Errorf("--keep-releases %d: want at least 1", c.KeepReleases))
	}
	if c.MaxLogSize < 4<<10 {
		errs = append(errs, fmt.Errorf("--max-log-size %s: want at least 4KiB", c.MaxLogSize.String()))
	}
	if c.KeepLogs < 1 {
		errs = append(errs, fmt.Errorf("--keep-logs %d: want at least 1", c.KeepLogs))
	}
	return errors.Join(errs...)
}

// stopper returns how a switch stops an old app that baton did not launch:
// by the port it listens on, which works only on this machine.
func (c *launchConfig) stopper() switcher.Stopper {
	if c.SSH != "" {
		return remoteStopper{host: c.SSH}
	}
	return launcher.PortStopper{}
}

// adminConfig returns the admin API's deploy settings.
func (c *launchConfig) adminConfig(stateDir string) admin.DeployConfig {
	return admin.DeployConfig{UploadDir: filepath.Join(stateDir, "uploads"), MaxArtifactBytes: int64(c.MaxArtifact)}
}

// attach gives sw a launcher when --run is set, adopting the instances that
// the state records, and clears uploads left by a crash. The returned func
// closes the launcher's connections; instances keep running.
func (c *launchConfig) attach(sw *switcher.Switcher, stateDir string, logger *slog.Logger) (func(), error) {
	if err := os.RemoveAll(filepath.Join(stateDir, "uploads")); err != nil {
		logger.Warn("could not clear old uploads", "err", err)
	}
	if c.Run == "" {
		return func() {}, nil
	}
	if c.SSH == "" {
		l := &launcher.Local{Command: c.Run, Dir: stateDir, Env: c.RunEnv, User: c.runAs, Logger: logger,
			KeepReleases: c.KeepReleases, MaxLogBytes: int64(c.MaxLogSize), KeepLogs: c.KeepLogs}
		sw.SetLauncher(launchAdapter{l})
		user := "baton's own"
		if c.runAs != nil {
			user = c.runAs.String()
		}
		logger.Info("deploys start the app on this machine", "run", c.Run, "user", user, "releases", filepath.Join(stateDir, "releases"), "logs", filepath.Join(stateDir, "logs"))
		ctx, stop := context.WithCancel(context.Background())
		go l.RotateLogsEvery(ctx, logRotateEvery)
		return stop, nil
	}
	l, err := launcher.NewSSH(launcher.SSHConfig{
		Target: c.SSH, KeyFile: c.SSHKey, KnownHosts: c.KnownHosts, InsecureIgnoreHostKey: c.SSHInsecure,
		Command: c.Run, Dir: c.SSHDir, Env: c.RunEnv, KeepReleases: c.KeepReleases, Logger: logger,
	})
	if err != nil {
		return nil, usageError(err)
	}
	sw.SetLauncher(launchAdapter{l})
	logger.Info("deploys start the app over SSH", "host", c.SSH, "run", c.Run, "dir", c.SSHDir)
	// A host that does not resolve or answer is a warning, not an error:
	// it may be down for now, and baton serves the live app meanwhile. In
	// the background, so that it does not hold up start-up.
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		if err := l.CheckReachable(ctx); err != nil && ctx.Err() == nil {
			logger.Warn("the SSH host is out of reach; deploys will fail until it answers", "host", c.SSH, "err", err)
			c.warnings.add(fmt.Sprintf("at start, the SSH host %s was out of reach: %v", c.SSH, err))
		}
	}()
	return func() { stop(); l.Close() }, nil
}

// logRotateEvery is how often local app logs are checked against
// --max-log-size: an app writing 10 MB/s overshoots by 100 MB at most.
const logRotateEvery = 10 * time.Second

// launchAdapter adapts a launcher.Launcher to switcher.Launcher.
type launchAdapter struct{ l launcher.Launcher }

func (a launchAdapter) Launch(ctx context.Context, s switcher.LaunchSpec) (switcher.Process, error) {
	return a.l.Start(ctx, launcher.Spec{ID: s.ID, Color: s.Color.String(), Port: s.Port, Artifact: s.Artifact,
		Version: s.Version, Installed: s.Installed, Progress: s.Progress})
}

func (a launchAdapter) Adopt(rec state.Instance) (switcher.Process, error) { return a.l.Adopt(rec) }

// Prune removes old releases if the launcher can (switcher.Pruner).
func (a launchAdapter) Prune(ctx context.Context, inUse []string) (string, error) {
	if p, ok := a.l.(switcher.Pruner); ok {
		return p.Prune(ctx, inUse)
	}
	return "", nil
}

// remoteStopper stands in for PortStopper when the apps run on an SSH host:
// a process there that baton did not start cannot be found by port from
// here, and a local process on the same port must not be killed instead.
type remoteStopper struct{ host string }

func (r remoteStopper) Stop(_ context.Context, addr string, _ time.Duration) (string, error) {
	return fmt.Sprintf("left the app at %s running: baton did not start it, and cannot find it by port on %s; stop it there", addr, r.host), nil
}
