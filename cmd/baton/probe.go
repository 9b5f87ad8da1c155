package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/probe"
)

const probeSynopsis = `Usage: baton probe URL [flags]

Sends a steady load at URL, for --duration or until interrupted (Ctrl-C),
and reports what its users would have seen: every request is recorded once
and never retried. The mix is keep-alive requests, a share on new
connections, and optionally slow requests and POSTs (--slow, --post; their
paths default to the sample app's /slow and /echo).

Prints requests, failures by kind, the longest window without a successful
answer, p50/p99/max latency, and when each version first and last answered
(from the --version-header response header, or the body's first word with
--version-from-body). Exits 1 when more than --max-failures requests failed,
so a CI job can gate a deploy on it.

--plot writes a timeline (SVG, or PNG if the name ends in .png): latency of
each request against time, coloured by version, failures as red crosses,
and switches as grey bands when --admin says when they happened.

Example, around a deploy in CI:
  baton probe http://127.0.0.1/ --rate 200 --plot timeline.svg --admin http://127.0.0.1:9900 &
  baton switch
  kill -INT %1; wait %1`

func runProbe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cfg         probe.Config
		duration    time.Duration
		maxFailures int
		plots       []string
		asJSON      bool
		caFile      string
	)
	fs := newFlagSet("probe", probeSynopsis, stdout)
	fs.DurationVar(&duration, "duration", 0, "how long to probe; 0 means until interrupted")
	fs.IntVar(&cfg.Rate, "rate", probe.DefaultRate, "requests per second")
	fs.IntVar(&cfg.KeepAliveConns, "keepalive-conns", probe.DefaultKeepAliveConns, "keep-alive connections")
	fs.Float64Var(&cfg.NewConnFraction, "new-conn", probe.DefaultNewConnFraction, "`fraction` of requests on a new connection (0 for none)")
	fs.Float64Var(&cfg.SlowFraction, "slow", 0, "`fraction` of slow requests, GET <slow-path>?ms=X")
	fs.DurationVar(&cfg.SlowMin, "slow-min", 500*time.Millisecond, "shortest slow request")
	fs.DurationVar(&cfg.SlowMax, "slow-max", 2*time.Second, "longest slow request")
	fs.StringVar(&cfg.SlowPath, "slow-path", "/slow", "`path` of slow requests; ?ms=X is appended")
	fs.Float64Var(&cfg.PostFraction, "post", 0, "`fraction` of POSTs of 1-16 KiB")
	fs.StringVar(&cfg.PostPath, "post-path", "/echo", "`path` of POSTs")
	fs.BoolVar(&cfg.CheckEcho, "check-echo", false, "check that POST answers are the sample app's \"<version> <bytes read>\"")
	fs.StringVar(&cfg.VersionHeader, "version-header", "X-App-Version", "response `header` naming the version that answered")
	fs.BoolVar(&cfg.VersionFromBody, "version-from-body", false, "without that header, take the version from the body's first word")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of one request (a slow one gets its X more)")
	fs.StringVar(&cfg.Connect, "connect", "", "connect to this `host:port` instead of the URL's host (Host header and TLS name stay the URL's)")
	fs.StringVar(&caFile, "cacert", "", "PEM `file` of CA certificates to trust for https, instead of the system's")
	fs.IntVar(&maxFailures, "max-failures", 0, "exit 1 when more requests than this failed")
	fs.StringArrayVar(&plots, "plot", nil, "write a timeline plot to `file` (.svg or .png); may be repeated")
	fs.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	// Like every client command it reads $BATON_ADMIN; unlike them it
	// needs no admin API, so without one it shows no switches.
	var cf clientFlags
	cf.registerAdmin(fs, os.Getenv("BATON_ADMIN"), "admin API `URL` [$BATON_ADMIN]; if set, switches during the probe are read from its status and shown")
	var service string
	fs.StringVarP(&service, "service", "s", "", "with --admin, show the switches of this `service` only (default: of every service)")
	if captureFlags(fs) {
		return errCaptured
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError(err)
	}
	if fs.NArg() != 1 {
		return usageError(errors.New("want exactly one URL, e.g. baton probe http://127.0.0.1/"))
	}
	cfg.URL = fs.Arg(0)
	if duration < 0 || maxFailures < 0 {
		return usageError(errors.New("--duration and --max-failures must not be negative"))
	}
	if caFile != "" {
		pool, err := readCertPool("--cacert", caFile, nil)
		if err != nil {
			return err
		}
		cfg.TLS = &tls.Config{RootCAs: pool}
	}
	if err := cfg.Validate(); err != nil {
		return usageError(err)
	}
	var client *adminClient
	if cf.admin != "" {
		var err error
		if client, err = cf.client(); err != nil {
			return err
		}
	}

	what := "until interrupted (Ctrl-C)"
	if duration > 0 {
		what = "for " + duration.String()
	}
	fmt.Fprintf(stderr, "probing %s at %d req/s %s\n", cfg.URL, cfg.Rate, what)
	rep, err := probe.Run(ctx, cfg, duration)
	if err != nil {
		return err
	}
	if rep.Err != nil {
		return rep.Err
	}
	if client != nil {
		// The probe may have been interrupted: ask with a fresh deadline.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		marks, err := switchMarks(actx, client, service, rep.Start, rep.End)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "baton probe: switch times not shown: %v\n", err)
		}
		rep.Marks = append(rep.Marks, marks...)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep.JSON(maxFailures)); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, rep.Summary(maxFailures))
	}
	for _, plot := range plots {
		if err := rep.WritePlotFile(plot); err != nil {
			return err
		}
		if !asJSON {
			fmt.Fprintf(stdout, "plot: %s\n", plot)
		}
	}
	if v := rep.Verdict(maxFailures); !v.Pass {
		return errors.New("probe: " + v.String())
	}
	return nil
}

// switchMarks reads the switches and deploys that overlapped [from, to]
// from the admin API's status history: of service if set, else of every
// service, each mark labelled with its service's name when there are
// several.
func switchMarks(ctx context.Context, c *adminClient, service string, from, to time.Time) ([]probe.Mark, error) {
	if service != "" {
		st, err := fetchStatus(ctx, c, "/v1/services/"+url.PathEscape(service)+"/status")
		if err != nil {
			return nil, err
		}
		return historyMarks(st, "", from, to), nil
	}
	list, err := fetchServices(ctx, c)
	if err != nil && !errors.Is(err, errNoServicesAPI) {
		return nil, err
	}
	if len(list.Services) <= 1 {
		st, err := fetchStatus(ctx, c, "/v1/status")
		if err != nil {
			return nil, err
		}
		return historyMarks(st, "", from, to), nil
	}
	var marks []probe.Mark
	for _, svc := range list.Services {
		st, err := fetchStatus(ctx, c, "/v1/services/"+url.PathEscape(svc.Name)+"/status")
		if err != nil {
			return marks, err
		}
		marks = append(marks, historyMarks(st, svc.Name+": ", from, to)...)
	}
	return marks, nil
}

// historyMarks returns the marks of st's history that overlapped [from,
// to], each label after prefix.
func historyMarks(st admin.StatusResponse, prefix string, from, to time.Time) []probe.Mark {
	var marks []probe.Mark
	for _, d := range st.History {
		end := d.Started.Add(d.Duration)
		if end.Before(from) || d.Started.After(to) {
			continue
		}
		label := fmt.Sprintf("%s%s %s→%s", prefix, d.Kind, d.From, d.To)
		if d.Version != "" {
			label += " " + d.Version
		}
		// A canary's or a watch's decision, so that the plot says why the
		// new version stopped answering.
		switch {
		case strings.Contains(d.Error, ": rolled back: "):
			label += ": rolled back"
		case strings.Contains(d.Error, ": aborted: "):
			label += ": aborted"
		case d.OK && d.Kind == "rollout":
			label += ": promoted"
		}
		marks = append(marks, probe.Mark{Start: d.Started, End: end, Label: label, Failed: !d.OK})
	}
	return marks
}
