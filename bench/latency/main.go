// Command latency measures the latency a proxy adds at a fixed request rate,
// the figure issue 2 sets a bar for (added p99 under 1 ms at 1000 req/s).
//
// It paces GET requests with internal/loadgen (a client that never retries
// and never hides a failure) at --rate over --conns keep-alive connections,
// first straight to the app and then through each proxy, in interleaved
// rounds so that a noisy neighbour hits every target alike. It prints a
// markdown table of the medians over the rounds of p50, p99 and p99.9, and
// each proxy's added p50 and p99 (proxy minus direct, per round, then the
// median).
//
//	latency --direct 127.0.0.1:18080 --proxy nginx=127.0.0.1:18180 --proxy baton=127.0.0.1:18280
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/batonproxy/baton/internal/loadgen"
)

type target struct{ name, addr string }

type targets []target

func (t *targets) String() string { return fmt.Sprint(*t) }

func (t *targets) Set(s string) error {
	name, addr, ok := strings.Cut(s, "=")
	if !ok || name == "" || addr == "" {
		return fmt.Errorf("%q: want NAME=HOST:PORT", s)
	}
	*t = append(*t, target{name, addr})
	return nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		proxies  targets
		direct   = fs.String("direct", "", "app `host:port`, measured without a proxy (required)")
		rate     = fs.Int("rate", 1000, "requests per second")
		conns    = fs.Int("conns", 16, "keep-alive connections")
		duration = fs.Duration("duration", 5*time.Second, "length of one measurement")
		rounds   = fs.Int("rounds", 3, "interleaved rounds")
		path     = fs.String("path", "/", "request path")
	)
	fs.Var(&proxies, "proxy", "proxy to measure, `NAME=HOST:PORT` (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *direct == "" || *rounds < 1 {
		fmt.Fprintln(stderr, "latency: --direct is required and --rounds must be at least 1")
		return 2
	}
	all := append(targets{{"app direct", *direct}}, proxies...)

	type sample struct{ p50, p99, p999 time.Duration }
	samples := make([][]sample, len(all)) // [target][round]
	failed := make([]int, len(all))
	skipped := make([]int, len(all))
	for r := range *rounds {
		for i, t := range all {
			ctx, cancel := context.WithTimeout(context.Background(), *duration)
			rep := loadgen.Run(ctx, loadgen.Config{
				Target:         t.addr,
				Host:           "bench.example",
				Rate:           *rate,
				KeepAliveConns: *conns,
				Path:           *path,
			})
			cancel()
			if rep.Err != nil {
				fmt.Fprintf(stderr, "latency: %s: %v\n", t.name, rep.Err)
				return 1
			}
			s := sample{rep.Percentile(50), rep.Percentile(99), rep.Percentile(99.9)}
			samples[i] = append(samples[i], s)
			failed[i] += len(rep.Failures())
			skipped[i] += rep.Skipped
			fmt.Fprintf(stderr, "round %d %-10s %6d req  p50 %-9v p99 %-9v p99.9 %-9v failed %d\n",
				r+1, t.name, rep.Total(), s.p50, s.p99, s.p999, len(rep.Failures()))
		}
	}

	fmt.Fprintf(stdout, "| %d req/s, %d keep-alive conns, GET %s | p50 | p99 | p99.9 | added p50 | added p99 | failed |\n", *rate, *conns, *path)
	fmt.Fprintln(stdout, "|---|---|---|---|---|---|---|")
	for i, t := range all {
		pick := func(f func(sample) time.Duration) time.Duration {
			var v []time.Duration
			for _, s := range samples[i] {
				v = append(v, f(s))
			}
			return median(v)
		}
		added := func(f func(sample) time.Duration) string {
			if i == 0 {
				return ""
			}
			var v []time.Duration
			for r := range samples[i] {
				v = append(v, f(samples[i][r])-f(samples[0][r]))
			}
			return us(median(v))
		}
		p50 := func(s sample) time.Duration { return s.p50 }
		p99 := func(s sample) time.Duration { return s.p99 }
		p999 := func(s sample) time.Duration { return s.p999 }
		fail := fmt.Sprint(failed[i])
		if skipped[i] > 0 {
			fail += fmt.Sprintf(" (%d skipped: client behind)", skipped[i])
		}
		fmt.Fprintf(stdout, "| %s | %s | %s | %s | %s | %s | %s |\n", t.name,
			us(pick(p50)), us(pick(p99)), us(pick(p999)), added(p50), added(p99), fail)
	}
	return 0
}

func median(v []time.Duration) time.Duration {
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func us(d time.Duration) string {
	return fmt.Sprintf("%d µs", d.Microseconds())
}
