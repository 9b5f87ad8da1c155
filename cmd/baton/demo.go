package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/health"
	"github.com/batonproxy/baton/internal/sampleapp"
	"github.com/batonproxy/baton/launcher"
	"github.com/batonproxy/baton/probe"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// sampleAppCommand runs the sample app; the demo starts it as a real child
// process of this same binary, so the demo needs nothing but baton itself.
const sampleAppCommand = "sample-app"

func runSampleApp(args []string, stdout, stderr io.Writer) int {
	return sampleapp.Main(args, stdout, stderr)
}

const demoSynopsis = `Usage: baton demo [flags]

Runs baton's main job on loopback with nothing to configure: starts the
sample app (version v1) as a real process, puts baton in front of it, sends
steady load (keep-alive, new-connection, slow and POST requests), and deploys
new versions one after the other: start vN+1 on the idle port, switch,
drain, stop the old process. Prints each step and the probe's summary,
writes its timeline plot (--plot), and exits 1 if any request failed.`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		switches     int
		rate         int
		startupDelay time.Duration
		verbose      bool
		plot         string
	)
	fs := newFlagSet("demo", demoSynopsis, stdout)
	fs.IntVar(&switches, "switches", 5, "how many deploys to run")
	fs.IntVar(&rate, "rate", 500, "requests per second of load")
	fs.DurationVar(&startupDelay, "startup-delay", time.Second, "how long each new app version takes to start")
	fs.BoolVar(&verbose, "verbose", false, "log baton's internals too")
	fs.StringVar(&plot, "plot", "baton-demo-timeline.svg", "write the probe's timeline to `file` (.svg or .png); empty for none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if switches < 1 || rate < 1 {
		return usageError(errors.New("--switches and --rate must be at least 1"))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find own binary: %w", err)
	}
	stateDir, err := os.MkdirTemp("", "baton-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(stateDir)
	logger := slog.New(slog.DiscardHandler)
	if verbose {
		logger = newLogger(stderr, "text", "debug")
	}

	ports, err := freePorts(2)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	addrs := [2]string{"127.0.0.1:" + strconv.Itoa(ports[0]), "127.0.0.1:" + strconv.Itoa(ports[1])}
	apps := &demoApps{exe: exe}
	if verbose {
		apps.stderr = stderr
	}
	defer apps.stopAll()

	fmt.Fprintf(stdout, "starting app v1 on %s (blue)\n", addrs[switcher.Blue])
	if err := apps.start(addrs[switcher.Blue], "v1", 0); err != nil {
		return err
	}
	checker := health.New(health.DefaultPath, time.Second)
	if err := waitHealthy(ctx, checker, addrs[switcher.Blue], 10*time.Second); err != nil {
		return fmt.Errorf("demo: app v1 did not start: %w", err)
	}

	store, err := state.NewStore(stateDir)
	if err != nil {
		return err
	}
	h := proxy.NewHandler(proxy.Options{Logger: logger})
	rt, err := newRouter(h, addrs[0], addrs[1])
	if err != nil {
		return err
	}
	sw, err := switcher.New(ctx, switcher.Config{Addrs: addrs, DrainTimeout: 10 * time.Second}, rt, checker, launcher.PortStopper{}, store, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo: public listener: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	fmt.Fprintf(stdout, "baton listening on %s, live: %s; sending %d req/s\n\n", ln.Addr(), sw.Live(), rate)

	prb, err := probe.Start(ctx, probe.Config{
		URL: "http://" + ln.Addr().String() + "/", Rate: rate, KeepAliveConns: 16,
		NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 300 * time.Millisecond, SlowMax: 2 * time.Second,
		PostFraction: 0.1, CheckEcho: true,
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer prb.Stop()
	sleepCtx(ctx, time.Second)

	var switchErr error
	for i := 1; i <= switches && ctx.Err() == nil; i++ {
		idle := sw.Live().Other()
		v := "v" + strconv.Itoa(i+1)
		fmt.Fprintf(stdout, "deploy %d/%d: starting app %s on %s (%s), it takes %s to start\n", i, switches, v, addrs[idle], idle, startupDelay)
		if err := apps.start(addrs[idle], v, startupDelay); err != nil {
			switchErr = err
			break
		}
		var swapped time.Time
		mark := probe.Mark{Start: time.Now(), Label: fmt.Sprintf("%s→%s %s", idle.Other(), idle, v)}
		res, err := sw.Switch(ctx, switcher.SwitchRequest{}, func(e switcher.Event) {
			if e.Step == "swap" {
				swapped = e.Time
			}
			fmt.Fprintf(stdout, "  %-6s %s\n", e.Step, e.Message)
		})
		mark.At, mark.End, mark.Failed = swapped, time.Now(), err != nil
		prb.Mark(mark)
		if err != nil {
			switchErr = err
			break
		}
		fmt.Fprintf(stdout, "  done in %s; %s was routed %s after it started listening\n\n",
			res.Duration.Round(time.Millisecond), v, swapped.Sub(apps.listenedAt(v)).Round(time.Millisecond))
		sleepCtx(ctx, 500*time.Millisecond)
	}
	sleepCtx(ctx, 500*time.Millisecond)
	rep := prb.Stop()
	fmt.Fprintf(stdout, "probe summary:\n%s", rep.Summary(0))
	if plot != "" {
		if err := rep.WritePlotFile(plot); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		fmt.Fprintf(stdout, "timeline plot: %s\n", plot)
	}
	if switchErr != nil {
		return fmt.Errorf("demo: %w", switchErr)
	}
	if n := len(rep.Failures()); n > 0 {
		return fmt.Errorf("demo: %d of %d requests failed", n, rep.Total())
	}
	fmt.Fprintf(stdout, "\nresult: %d deploys, %d requests, 0 failed\n", switches, rep.Total())
	return nil
}

// demoApps starts sample app processes, notes when each starts listening,
// and reaps them.
type demoApps struct {
	exe      string
	stderr   io.Writer // app logs; nil discards them
	mu       sync.Mutex
	cmds     []*exec.Cmd
	listened map[string]time.Time // by version
	wg       sync.WaitGroup
}

func (a *demoApps) start(addr, version string, delay time.Duration) error {
	cmd := exec.Command(a.exe, sampleAppCommand, "--addr", addr, "--version", version, "--startup-delay", delay.String())
	cmd.Stderr = a.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("start app %s: %w", version, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start app %s: %w", version, err)
	}
	a.mu.Lock()
	a.cmds = append(a.cmds, cmd)
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				a.mu.Lock()
				if a.listened == nil {
					a.listened = map[string]time.Time{}
				}
				a.listened[version] = time.Now()
				a.mu.Unlock()
			}
		}
		_ = cmd.Wait() // reap; the switcher stops old apps by port
	}()
	return nil
}

func (a *demoApps) listenedAt(version string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.listened[version]
}

func (a *demoApps) stopAll() {
	a.mu.Lock()
	for _, c := range a.cmds {
		_ = c.Process.Signal(os.Interrupt)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

func waitHealthy(ctx context.Context, c *health.Checker, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := c.Check(ctx, addr)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
