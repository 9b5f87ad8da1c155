package launcher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/state"
)

// Errors a caller can act on.
var (
	// ErrInvalidSpec: the Spec cannot be started as given.
	ErrInvalidSpec = errors.New("invalid launch spec")
	// ErrNotAdoptable: a recorded instance belongs to another launcher or host.
	ErrNotAdoptable = errors.New("instance was started by another launcher")
)

// Launcher starts app instances. Implementations are safe for concurrent use.
type Launcher interface {
	// Start installs spec.Artifact where the instance will run and starts
	// the instance. It returns once the process runs; it does not wait for
	// the app to listen. ctx bounds the preparation (upload, start), not the
	// instance's life.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Adopt returns a handle on an instance recorded by an earlier baton
	// process. It does no I/O; an instance that has since gone away is
	// simply found not alive.
	Adopt(rec state.Instance) (Instance, error)
	// String describes the launcher, e.g. "local" or "ssh deploy@app1:22".
	String() string
}

// Instance is one running app process. Its methods are safe for concurrent use.
type Instance interface {
	// Record describes the instance for baton's state file.
	Record() state.Instance
	// Wait blocks until the instance exits or ctx is done. It returns
	// ctx.Err() in the second case; otherwise nil after a clean exit (status
	// 0) and an error describing the exit for any other.
	Wait(ctx context.Context) error
	// Alive reports whether the instance is still running. An error means
	// the launcher could not tell (an SSH host out of reach).
	Alive(ctx context.Context) (bool, error)
	// Stop sends sig to the instance's process group, waits up to grace for
	// the instance to exit, then sends SIGKILL. It returns a short
	// description of what it did. An instance that is already gone is not an
	// error.
	Stop(ctx context.Context, sig syscall.Signal, grace time.Duration) (string, error)
	// LogTail returns up to the last n lines of the instance's output log.
	LogTail(ctx context.Context, n int) (string, error)
	// String names the instance, e.g. "pid 4242" or "pid 4242 on deploy@app1:22".
	String() string
}

// Spec describes an instance to start.
type Spec struct {
	// ID identifies the deploy; it marks the process (BATON_INSTANCE) and
	// names its log file. Letters, digits, '-' and '_' only.
	ID string
	// Color is "blue" or "green".
	Color string
	// Port is the port the app must listen on ({port} and $PORT).
	Port int
	// Artifact is a file on this machine to install and run, or empty when
	// the command template needs none.
	Artifact string
	// Version is the app version; it names the install directory.
	Version string
	// Installed means Artifact is not a file on this machine to install
	// but where an earlier Start installed it, on the instance's host (an
	// Instance's Record().Artifact): the instance runs it from there, as a
	// rollback to a release still on disk does.
	Installed bool
	// Progress, if set, is told of slow steps such as an upload.
	Progress func(msg string)
}

var (
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
	idRE      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// validate reports every problem with s for a launch of command.
func (s Spec) validate(command string) error {
	var errs []error
	if !idRE.MatchString(s.ID) {
		errs = append(errs, fmt.Errorf("id %q: want 1-64 letters, digits, - or _", s.ID))
	}
	if s.Color != "blue" && s.Color != "green" {
		errs = append(errs, fmt.Errorf("color %q: want blue or green", s.Color))
	}
	if s.Port < 1 || s.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: want 1-65535", s.Port))
	}
	if !versionRE.MatchString(s.Version) {
		errs = append(errs, fmt.Errorf("version %q: want 1-128 letters, digits or . _ + -, starting with a letter or digit", s.Version))
	}
	if s.Artifact == "" && strings.Contains(command, "{artifact}") {
		errs = append(errs, errors.New("the command uses {artifact} but no artifact was given"))
	}
	if s.Installed && s.Artifact == "" {
		errs = append(errs, errors.New("an installed artifact needs its path"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return nil
}

// placeholderRE matches what looks like a placeholder: {name}, not the
// shell's ${name}.
var placeholderRE = regexp.MustCompile(`(^|[^$])\{([A-Za-z_][A-Za-z0-9_-]*)\}`)

// placeholders are the names script replaces.
var placeholders = map[string]bool{"artifact": true, "port": true, "version": true, "color": true}

// CheckCommand reports whether command can serve as a launch template:
// not empty, and no placeholder other than {artifact}, {port}, {version}
// and {color} (a typo such as {artefact} would reach the shell as is). It
// reports every unknown placeholder at once.
func CheckCommand(command string) error {
	if strings.TrimSpace(command) == "" {
		return errors.New("the command template is empty")
	}
	var unknown []string
	for _, m := range placeholderRE.FindAllStringSubmatch(command, -1) {
		if !placeholders[m[2]] && !slices.Contains(unknown, "{"+m[2]+"}") {
			unknown = append(unknown, "{"+m[2]+"}")
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("unknown placeholder(s) %s in %q: want {artifact}, {port}, {version} or {color}", strings.Join(unknown, ", "), command)
	}
	return nil
}

// portUseRE matches a use of the PORT variable in a shell command.
var portUseRE = regexp.MustCompile(`\$(PORT\b|\{PORT[}:])`)

// CheckPortUse reports whether command gives the app the port of its colour:
// with {port} or $PORT in the command. Without either, both colours would
// start the app on whatever port it picks itself, and the second one would
// find it taken.
func CheckPortUse(command string) error {
	if strings.Contains(command, "{port}") || portUseRE.MatchString(command) {
		return nil
	}
	return fmt.Errorf("%q uses neither {port} nor $PORT: each colour needs its own port; pass it to the app, e.g. 'java -jar {artifact} --server.port={port}'", command)
}

// script returns the shell script that runs command for spec, with
// artifact as the installed artifact's path: the placeholders replaced by
// shell-quoted values, and exec in front when the command is one simple
// command, so that the shell is replaced by the app and keeps its PID.
func script(command string, spec Spec, artifact string) string {
	r := strings.NewReplacer(
		"{artifact}", shellQuote(artifact),
		"{port}", strconv.Itoa(spec.Port),
		"{version}", shellQuote(spec.Version),
		"{color}", spec.Color,
	)
	s := strings.TrimSpace(r.Replace(command))
	if !strings.ContainsAny(s, ";&|\n`()") && !strings.HasPrefix(s, "exec ") {
		s = "exec " + s
	}
	return s
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+/=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// instanceEnv returns the variables baton sets for an instance.
func instanceEnv(spec Spec, artifact string) []string {
	return []string{
		"PORT=" + strconv.Itoa(spec.Port),
		"BATON_COLOR=" + spec.Color,
		"BATON_VERSION=" + spec.Version,
		"BATON_ARTIFACT=" + artifact,
		"BATON_INSTANCE=" + spec.ID,
	}
}

// relPaths returns where spec's artifact and log go, relative to a
// launcher's base directory.
func relPaths(spec Spec) (artifact, log string) {
	if spec.Artifact != "" {
		artifact = filepath.Join("releases", spec.Version, filepath.Base(spec.Artifact))
	}
	log = filepath.Join("logs", spec.Color+"-"+spec.Version+"-"+spec.ID+".log")
	return artifact, log
}

// addrPort returns the port of a host:port address, 0 if it has none.
func addrPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0
	}
	return n
}

// lastLines returns the last n lines of b, without a trailing newline.
func lastLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailBytes bounds how much of a log LogTail reads.
const tailBytes = 64 << 10

// readTail returns the last n lines of the file at path.
func readTail(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(st.Size()-tailBytes, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return "", err
	}
	return lastLines(b, n), nil
}

// signalName returns "SIGTERM" for syscall.SIGTERM and so on.
func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	}
	return "signal " + strconv.Itoa(int(sig))
}
