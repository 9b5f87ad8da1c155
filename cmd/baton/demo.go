package main

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/internal/sampleapp"
	"github.com/batonproxy/baton/launcher"
	"github.com/batonproxy/baton/probe"
)

// sampleAppCommand runs the sample app; the demo starts it as a real child
// process of this same binary, so the demo needs nothing but baton itself.
const sampleAppCommand = "sample-app"

func runSampleApp(args []string, stdout, stderr io.Writer) int {
	return sampleapp.Main(args, stdout, stderr)
}

const demoSynopsis = `Usage: baton demo [flags]

Runs baton's main job on loopback with nothing to configure: a baton
('baton serve --config', as a child process) in front of three services
(shop and api by host, shop-admin by path prefix under the shop's host;
the embedded config file is printed), each deployed from this same binary
(its sample app) as a real process. Steady load runs through all three
(keep-alive, new-connection, slow and POST requests) while deploys of new
versions go round the services: start vN+1 on the service's idle port,
health checks, swap, drain, stop the old process. Prints each step and each
service's summary, writes a timeline plot per service (--plot), and exits 1
if any request failed.`

//go:embed demo.yaml
var demoConfig string

// demoService is a service of demo.yaml and the URL its load goes to.
type demoService struct {
	name, url, prefix string
}

var demoServices = []demoService{
	{"shop", "http://shop.example.com/", ""},
	{"api", "http://api.example.com/", ""},
	{"shop-admin", "http://shop.example.com/admin/", "/admin"},
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		deploys      int
		rate         int
		startupDelay time.Duration
		verbose      bool
		plot         string
	)
	fs := newFlagSet("demo", demoSynopsis, stdout)
	fs.IntVar(&deploys, "deploys", 6, "how many deploys to run, going round the services")
	fs.IntVar(&deploys, "switches", 6, "the same as --deploys (its name before services)")
	fs.IntVar(&rate, "rate", 450, "requests per second of load, shared by the services")
	fs.DurationVar(&startupDelay, "startup-delay", time.Second, "how long each new app version takes to start")
	fs.BoolVar(&verbose, "verbose", false, "print baton's log too")
	fs.StringVar(&plot, "plot", "baton-demo-timeline.svg", "write each service's timeline to `file` with the service's name added (.svg or .png); empty for none")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if deploys < 1 || rate < len(demoServices) {
		return usageError(fmt.Errorf("--deploys must be at least 1 and --rate at least %d", len(demoServices)))
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: find own binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "baton-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)

	b, err := startDemoBaton(ctx, exe, dir, startupDelay, verbose, stdout, stderr)
	if err != nil {
		return err
	}
	defer b.stop(stdout)

	for _, s := range demoServices {
		fmt.Fprintf(stdout, "deploy %s-v1\n", s.name)
		if err := b.deploy(ctx, s.name, exe, s.name+"-v1", stdout); err != nil {
			return fmt.Errorf("demo: first deploy of %s: %w", s.name, err)
		}
	}
	fmt.Fprintf(stdout, "\nsending %d req/s through baton at %s, shared by the three services\n\n", rate, b.http)

	probes := make([]*probe.Probe, len(demoServices))
	for i, s := range demoServices {
		probes[i], err = probe.Start(ctx, probe.Config{
			URL: s.url, Connect: b.http, Rate: rate / len(demoServices), KeepAliveConns: 6,
			NewConnFraction: 0.1, SlowFraction: 0.05, SlowMin: 300 * time.Millisecond, SlowMax: 2 * time.Second,
			SlowPath: s.prefix + "/slow", PostPath: s.prefix + "/echo", PostFraction: 0.1, CheckEcho: true,
		})
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer probes[i].Stop()
	}
	sleepCtx(ctx, time.Second)

	var deployErr error
	next := map[string]int{}
	for i := 0; i < deploys && ctx.Err() == nil; i++ {
		n := i % len(demoServices)
		s := demoServices[n]
		next[s.name]++
		v := s.name + "-v" + strconv.Itoa(next[s.name]+1) // the service's name in its versions shows the routing
		fmt.Fprintf(stdout, "deploy %d/%d: %s (it takes %s to start)\n", i+1, deploys, v, startupDelay)
		mark := probe.Mark{Start: time.Now(), Label: v}
		err := b.deploy(ctx, s.name, exe, v, stdout)
		mark.At, mark.End, mark.Failed = b.swapped, time.Now(), err != nil
		probes[n].Mark(mark)
		if err != nil {
			deployErr = fmt.Errorf("deploy %s of %s: %w", v, s.name, err)
			break
		}
		fmt.Fprintln(stdout)
		sleepCtx(ctx, 500*time.Millisecond)
	}
	sleepCtx(ctx, 500*time.Millisecond)

	failed, total := 0, 0
	for i, s := range demoServices {
		rep := probes[i].Stop()
		sum := rep.JSON(0)
		failed += sum.Failed
		total += sum.Requests
		var versions []string
		for _, v := range sum.Versions {
			versions = append(versions, fmt.Sprintf("%s (%d)", v.Version, v.OK))
		}
		fmt.Fprintf(stdout, "%-10s %6d requests, %d failed; answered by %s\n", s.name, sum.Requests, sum.Failed, strings.Join(versions, ", "))
		if plot != "" {
			file := strings.TrimSuffix(plot, filepath.Ext(plot)) + "-" + s.name + filepath.Ext(plot)
			if err := rep.WritePlotFile(file); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			fmt.Fprintf(stdout, "%-10s timeline plot: %s\n", "", file)
		}
	}
	if deployErr != nil {
		return fmt.Errorf("demo: %w", deployErr)
	}
	if failed > 0 {
		return fmt.Errorf("demo: %d of %d requests failed", failed, total)
	}
	fmt.Fprintf(stdout, "\nresult: %d deploys over %d services, %d requests, 0 failed\n", deploys, len(demoServices), total)
	return nil
}

// demoBaton is the 'baton serve' child process of the demo, and the app
// instances it launched (which outlive it, as they do a real baton's
// restart: the demo stops them at the end).
type demoBaton struct {
	cmd     *exec.Cmd
	done    chan error
	http    string
	client  *adminClient
	swapped time.Time // of the last deploy
	pids    []int     // every instance a deploy started
}

// startDemoBaton writes the demo's config file (ports filled in) and token
// into dir, prints the file, starts 'baton serve' on it and waits for its
// admin API.
func startDemoBaton(ctx context.Context, exe, dir string, startupDelay time.Duration, verbose bool, stdout, stderr io.Writer) (*demoBaton, error) {
	ports, err := freePorts(8)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	vars := map[string]string{"STARTUP_DELAY": startupDelay.String()}
	for i, name := range []string{"HTTP", "ADMIN", "SHOP_BLUE", "SHOP_GREEN", "API_BLUE", "API_GREEN", "ADMIN_BLUE", "ADMIN_GREEN"} {
		vars[name] = strconv.Itoa(ports[i])
	}
	config := os.Expand(demoConfig, func(k string) string { return vars[k] })
	configFile := filepath.Join(dir, "baton.yaml")
	tokenFile := filepath.Join(dir, "admin-token")
	if err := errors.Join(os.WriteFile(configFile, []byte(config), 0o600),
		os.WriteFile(tokenFile, []byte(rand.Text()), 0o600)); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	b := &demoBaton{http: "127.0.0.1:" + vars["HTTP"], done: make(chan error, 1)}
	adminAddr := "127.0.0.1:" + vars["ADMIN"]
	fmt.Fprintf(stdout, "baton serve --config %s, with this file:\n\n%s\n", configFile, indent(config))

	b.cmd = exec.Command(exe, "serve", "--config", configFile, "--http", b.http, "--http-only",
		"--admin", adminAddr, "--admin-token-file", tokenFile, "--state-dir", filepath.Join(dir, "state"))
	if verbose {
		b.cmd.Stdout, b.cmd.Stderr = stderr, stderr
	}
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start baton serve: %w", err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	cf := clientFlags{admin: "http://" + adminAddr, tokenFile: tokenFile}
	if b.client, err = cf.client(); err != nil {
		b.stop(io.Discard)
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := fetchServices(ctx, b.client)
		if err == nil {
			return b, nil
		}
		select {
		case werr := <-b.done:
			b.done <- werr
			return nil, fmt.Errorf("demo: baton serve exited (%v) before its admin API answered; run with --verbose to see its log", werr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.stop(io.Discard)
			return nil, fmt.Errorf("demo: baton's admin API did not answer: %w", err)
		}
	}
}

// deploy deploys version of the sample app (exe itself, read on baton's
// machine as 'baton deploy --server-path' does) to service, printing each
// step as 'baton deploy' does.
func (b *demoBaton) deploy(ctx context.Context, service, exe, version string, stdout io.Writer) error {
	body, _ := json.Marshal(admin.DeployRequest{Version: version, Artifact: exe})
	resp, err := b.client.do(ctx, http.MethodPost, "/v1/services/"+service+"/deploy", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return followStream(resp.Body, stdout, false, func(l admin.StreamLine) {
		if l.Step == "swap" {
			b.swapped = l.Time
		}
		if l.Deploy != nil && l.Deploy.PID > 0 {
			b.pids = append(b.pids, l.Deploy.PID)
		}
	})
}

// stop stops baton (SIGTERM: it finishes the requests in flight) and then
// the app instances still running, which baton leaves running on purpose.
func (b *demoBaton) stop(stdout io.Writer) {
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
	}
	var left []int
	for _, pid := range b.pids {
		if launcher.Alive(pid) {
			syscall.Kill(pid, syscall.SIGTERM)
			left = append(left, pid)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range left {
		for launcher.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if launcher.Alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(stdout, "stopped baton and the %d app instances still running\n", len(left))
	}
}

// indent indents every line of s by two spaces.
func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
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
