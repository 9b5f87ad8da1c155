// Command benchproxy is a bench-only stand-in for 'baton serve': the proxy
// package wired the way serve wires it (one Handler, a blue Upstream, the
// same public http.Server settings), without the switcher, the admin API or
// the state file. bench/speed.sh uses it when cmd/baton does not build, and it
// isolates the request path when profiling (--cpuprofile, --memprofile).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/batonproxy/baton/proxy"
)

func main() {
	var (
		addr       = flag.String("http", "127.0.0.1:18280", "listen `address`")
		blue       = flag.String("blue", "127.0.0.1:18080", "app `host:port`")
		cpuprofile = flag.String("cpuprofile", "", "write a CPU profile to `file` until SIGINT/SIGTERM")
		memprofile = flag.String("memprofile", "", "write an allocation profile to `file` at exit")
		fastPath   = flag.Bool("fast-path", true, "serve with proxy.FastServer, as 'baton serve' does on plain HTTP (false: net/http only)")
	)
	flag.Parse()
	if err := run(*addr, *blue, *cpuprofile, *memprofile, *fastPath); err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

func run(addr, blue, cpuprofile, memprofile string, fastPath bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	u, err := proxy.NewUpstream("blue", blue)
	if err != nil {
		return err
	}
	h := proxy.NewHandler(proxy.Options{Logger: logger})
	h.Route(u)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The same settings as cmd/baton's public server.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	serve := srv.Serve
	var fast *proxy.FastServer
	if fastPath {
		fast = &proxy.FastServer{Router: proxy.SingleRoute(h), Fallback: srv}
		serve = fast.Serve
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		srv.Close()
		if fast != nil {
			fast.Close()
		}
	}()
	if err := serve(ln); err != http.ErrServerClosed {
		return err
	}
	report(u.Served())
	if memprofile != "" {
		f, err := os.Create(memprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.Lookup("allocs").WriteTo(f, 0)
	}
	return nil
}

// report prints, per request served, the CPU the runtime accounts to the
// garbage collector and to the program, and the number of GC cycles: the GC's
// share is measurable on a busy machine where throughput is not.
func report(served uint64) {
	samples := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/user:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/goal:bytes"},
	}
	metrics.Read(samples)
	if served == 0 {
		served = 1
	}
	gc, user := samples[0].Value.Float64(), samples[1].Value.Float64()
	fmt.Fprintf(os.Stderr, "benchproxy: %d requests; per request: GC %.2f µs, user %.2f µs (GC %.1f%% of GC+user); %d GC cycles; heap goal %d KiB\n",
		served, gc/float64(served)*1e6, user/float64(served)*1e6, 100*gc/(gc+user),
		samples[2].Value.Uint64(), samples[3].Value.Uint64()>>10)
}
