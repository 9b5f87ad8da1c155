// Command baton is a reverse proxy that moves traffic from the old version of
// an app to the new one without dropping a request. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `baton: hand traffic from the old version of an app to the new one, dropping nothing.

Usage:
  baton <command> [flags]

Commands:
  serve     run the proxy and the admin API
  deploy    ship a new version: start it on the idle colour, health check, switch, stop old
  switch    move traffic to the other colour (health check, swap, drain, stop old)
  rollout   steer a canary (deploy --canary): --percent N, --promote, --abort
  rollback  bring back the version that was live before the last deploy or switch
  status    show the live colour, each app's health and the last switches, per service
  reload    make 'baton serve --config' apply its config file again: services added, changed, removed
  service   'service stop NAME': stop the app instances of a service a reload removed
  demo      run a self-contained demo: three services, deploys under load
  upgrade   replace the running baton with the binary now at its path, dropping nothing
  probe     send steady load at a URL and report what users saw (CI gate, timeline plot)
  version   print baton's version, commit and Go version
  completion  print a shell completion script: bash, zsh or fish

With several services (baton serve --config), deploy, switch, rollout,
rollback and status take --service NAME (-s); docs/services.md.

Run 'baton <command> --help' for a command's flags.
`

// Exit codes: 0 success, 1 the operation failed, 2 the command was misused.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// errUsage marks errors that are the caller's mistake; they exit 2.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, rest, stdout, stderr)
	case "deploy":
		err = runDeploy(ctx, rest, stdout, stderr)
	case "switch":
		err = runSwitch(ctx, rest, stdout, stderr)
	case "rollout":
		err = runRollout(ctx, rest, stdout, stderr)
	case "rollback":
		err = runRollback(ctx, rest, stdout, stderr)
	case "upgrade":
		err = runUpgrade(ctx, rest, stdout, stderr)
	case "status":
		err = runStatus(ctx, rest, stdout, stderr)
	case "reload":
		err = runReload(ctx, rest, stdout, stderr)
	case "service":
		err = runService(ctx, rest, stdout, stderr)
	case "probe":
		err = runProbe(ctx, rest, stdout, stderr)
	case "demo":
		err = runDemo(ctx, rest, stdout, stderr)
	case "version":
		err = runVersion(rest, stdout)
	case "completion":
		err = runCompletion(rest, stdout)
	case completeCommand:
		return runComplete(ctx, rest, stdout)
	case sampleAppCommand:
		return runSampleApp(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "baton: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
		return exitOK
	case errors.Is(err, errUsage):
		var m *misuse
		if errors.As(err, &m) && m.plain {
			fmt.Fprintf(stderr, "baton: %v\n", err)
		} else {
			fmt.Fprintf(stderr, "baton %s: %v\nRun 'baton %s --help' for usage.\n", cmd, err, cmd)
		}
		return exitUsage
	default:
		fmt.Fprintf(stderr, "baton: %v\n", err)
		return exitFailure
	}
}

// usageError marks err as the caller's mistake, so that run exits 2 and
// points at --help.
func usageError(err error) error { return &misuse{err: err} }

// misuse is a usage error; plain ones say what to do themselves and are
// printed without the pointer to --help.
type misuse struct {
	err   error
	plain bool
}

func (m *misuse) Error() string        { return m.err.Error() }
func (m *misuse) Unwrap() error        { return m.err }
func (m *misuse) Is(target error) bool { return target == errUsage }

// newFlagSet returns a pflag set that reports errors instead of exiting and
// prints a usage text headed by synopsis.
func newFlagSet(name, synopsis string, out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\n\nFlags:\n%s", synopsis, fs.FlagUsages())
	}
	return fs
}

// parseFlags parses args into fs, turning errors into usage errors and
// refusing stray positional arguments.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	if captureFlags(fs) {
		return errCaptured
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

// buildVersion is what 'baton version' says: the version set at build
// time (-ldflags "-X main.version=..."; the Debian package sets it), the
// commit and whether the tree had uncommitted changes (from the build
// info, when built with VCS stamping), and the Go version and platform.
type buildVersion struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func currentVersion() buildVersion {
	v := buildVersion{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func (v buildVersion) String() string {
	s := fmt.Sprintf("baton %s (%s %s", v.Version, v.Go, v.Platform)
	if v.Commit != "" {
		s += ", commit " + v.Commit[:min(12, len(v.Commit))]
		if v.Modified {
			s += "+dirty"
		}
	}
	return s + ")"
}

func runVersion(args []string, stdout io.Writer) error {
	fs := newFlagSet("version", "Usage: baton version [--json]\n\nPrints baton's version, the commit it was built from and the Go version.", stdout)
	asJSON := fs.Bool("json", false, "print it as JSON: version, commit, modified, go, platform")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := currentVersion()
	if *asJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	fmt.Fprintln(stdout, v)
	return nil
}
