package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/proxy"
	"github.com/batonproxy/baton/switcher"
)

// Split implements switcher.Splitter for the router: the canary's share
// goes to the proxy as an immutable proxy.Split behind an atomic pointer.
func (r *router) Split(canary switcher.Color, percent int, rules switcher.SplitRules, seed string) error {
	s, err := proxy.NewSplit(proxy.SplitConfig{
		Canary: r.ups[canary], Percent: percent, Seed: seed,
		Cookie: rules.StickyCookie, Header: rules.StickyHeader, AppCookie: rules.StickyAppCookie,
		AllowHeader: rules.AllowHeader, AllowHeaderValue: rules.AllowHeaderValue,
		AllowCookie: rules.AllowCookie, AllowCookieValue: rules.AllowCookieValue,
	})
	if err != nil {
		return err
	}
	r.h.SetSplit(s)
	return nil
}

// Unsplit implements switcher.Splitter.
func (r *router) Unsplit() { r.h.SetSplit(nil) }

// tallyObserver feeds the switcher's Tally, which the judge of a canary or
// a watch reads, from the proxy's request outcomes, and passes them on.
// While no canary or watch runs it costs one atomic load per request.
//
// Counting here, behind the proxy.Observer the metrics already use, rather
// than in proxy.Handler keeps the request path untouched: the observer
// already has the status and the duration of every request, and the
// metrics' own histogram is cumulative since start and too coarse for a
// p99 over the last minute.
type tallyObserver struct {
	next  proxy.Observer
	ups   [2]*proxy.Upstream // set by serve before serving
	tally *switcher.Tally
}

func newTallyObserver(next proxy.Observer) *tallyObserver {
	return &tallyObserver{next: next, tally: &switcher.Tally{}}
}

func (t *tallyObserver) RequestDone(u *proxy.Upstream, r proxy.RequestInfo, status int, d time.Duration) {
	if t.tally.Armed() {
		for c, up := range t.ups {
			if up == u {
				t.tally.Record(switcher.Color(c), status, d)
				break
			}
		}
	}
	if t.next != nil {
		t.next.RequestDone(u, r, status, d)
	}
}

func (t *tallyObserver) UpstreamError(u *proxy.Upstream, kind string, retried bool) {
	if t.next != nil {
		t.next.UpstreamError(u, kind, retried)
	}
}

// watchFlags are the flags of deploy, switch and a canary that ask for a
// watch after the traffic moved and set the judge's thresholds.
type watchFlags struct {
	watch        time.Duration
	maxErrorRate string
	maxP99       time.Duration
	minRequests  int
	judgeWindow  time.Duration
}

func (f *watchFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&f.watch, "watch", 0, "after the traffic moved, keep the old version running this long and move back to it if the new one fails the judge (e.g. 2m)")
	fs.StringVar(&f.maxErrorRate, "max-error-rate", "", "judge: largest `share` of 5xx answers the new version may give, e.g. 2% or 0.02 (default: at most twice the old version's and 1 point above it)")
	fs.DurationVar(&f.maxP99, "max-p99", 0, "judge: highest p99 answer time the new version may have, e.g. 500ms (default: at most twice the old version's and 100ms above it)")
	fs.IntVar(&f.minRequests, "min-requests", switcher.DefaultMinRequests, "judge: answers the new version must have given before it is judged")
	fs.DurationVar(&f.judgeWindow, "judge-window", switcher.DefaultJudgeWindow, "judge: how far back it looks")
}

func (f *watchFlags) request() (admin.WatchRequest, error) {
	w := admin.WatchRequest{MinRequests: f.minRequests}
	var errs []error
	if f.watch < 0 {
		errs = append(errs, fmt.Errorf("--watch %s is negative", f.watch))
	}
	if f.watch > 0 {
		w.Watch = f.watch.String()
	}
	if f.maxErrorRate != "" {
		r, err := parseRate(f.maxErrorRate)
		if err != nil {
			errs = append(errs, fmt.Errorf("--max-error-rate: %w", err))
		}
		w.MaxErrorRate = r
	}
	if f.maxP99 < 0 {
		errs = append(errs, fmt.Errorf("--max-p99 %s is negative", f.maxP99))
	}
	if f.maxP99 > 0 {
		w.MaxP99 = f.maxP99.String()
	}
	if f.minRequests < 1 {
		errs = append(errs, fmt.Errorf("--min-requests %d: want at least 1", f.minRequests))
	}
	if f.judgeWindow <= 0 {
		errs = append(errs, fmt.Errorf("--judge-window %s: want a positive duration", f.judgeWindow))
	}
	if f.judgeWindow != switcher.DefaultJudgeWindow {
		w.JudgeWindow = f.judgeWindow.String()
	}
	if f.minRequests == switcher.DefaultMinRequests {
		w.MinRequests = 0
	}
	return w, errors.Join(errs...)
}

// parseRate parses "2%" or "0.02" into 0.02.
func parseRate(s string) (float64, error) {
	num, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if pct {
		v /= 100
	}
	if err != nil || v <= 0 || v > 1 {
		return 0, fmt.Errorf("%q: want a share such as 2%% or 0.02", s)
	}
	return v, nil
}

// canaryFlags are the flags that make 'baton deploy' a canary rollout.
type canaryFlags struct {
	fs           *pflag.FlagSet
	canary       int
	steps        string
	stepInterval time.Duration
	sticky       bool
	stickyHeader string
	stickyCookie string
	canaryHeader string
	canaryCookie string
	watchFlags
}

func (f *canaryFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.IntVar(&f.canary, "canary", 0, "start the new version as a canary taking this `percent` of requests, beside the old one; steer it with 'baton rollout'")
	fs.StringVar(&f.steps, "steps", "", "canary shares in per cent, a `list` such as 10,25,50,100, one every --step-interval; a last step of 100 promotes")
	fs.DurationVar(&f.stepInterval, "step-interval", 0, "time between --steps (e.g. 2m)")
	fs.BoolVar(&f.sticky, "sticky", false, "keep each client on one version with a cookie baton sets ("+switcher.DefaultStickyCookie+"_<service>; "+switcher.DefaultStickyCookie+" for the default service)")
	fs.StringVar(&f.stickyHeader, "sticky-header", "", "keep each client on one version by this request `header` (e.g. a user ID)")
	fs.StringVar(&f.stickyCookie, "sticky-cookie", "", "keep each client on one version by this `cookie` of the app (e.g. its session)")
	fs.StringVar(&f.canaryHeader, "canary-header", "", "requests with this header always go to the new version (testers), e.g. `'X-Canary: 1'`")
	fs.StringVar(&f.canaryCookie, "canary-cookie", "", "requests with this cookie always go to the new version (testers), as `name=value`")
	f.watchFlags.register(fs)
}

// active reports whether the flags ask for a canary.
func (f *canaryFlags) active() bool { return f.fs.Changed("canary") || f.fs.Changed("steps") }

// request returns where 'baton deploy' sends dr: the rollout endpoint
// (op "rollout") with a RolloutRequest if the flags ask for a canary, else
// the deploy endpoint (op "deploy"), with the watch flags in either; extra
// is the same as an upload's query.
func (f *canaryFlags) request(dr admin.DeployRequest) (op string, body any, extra url.Values, err error) {
	w, err := f.watchFlags.request()
	if err != nil {
		return "", nil, nil, usageError(err)
	}
	dr.WatchRequest = w
	if !f.active() {
		for _, name := range []string{"step-interval", "sticky", "sticky-header", "sticky-cookie", "canary-header", "canary-cookie"} {
			if f.fs.Changed(name) {
				return "", nil, nil, usageError(fmt.Errorf("--%s needs --canary or --steps", name))
			}
		}
		return "deploy", dr, w.Query(), nil
	}
	r, err := f.rollout(dr)
	if err != nil {
		return "", nil, nil, err
	}
	return "rollout", r, r.Query(""), nil
}

func (f *canaryFlags) rollout(dr admin.DeployRequest) (*admin.RolloutRequest, error) {
	r := &admin.RolloutRequest{DeployRequest: dr, Sticky: f.sticky, StickyHeader: f.stickyHeader, StickyCookie: f.stickyCookie,
		CanaryHeader: f.canaryHeader, CanaryCookie: f.canaryCookie}
	var errs []error
	if f.steps != "" {
		steps, err := admin.ParseSteps(f.steps)
		if err != nil {
			errs = append(errs, fmt.Errorf("--steps: %w", err))
		}
		r.Steps = steps
	}
	switch {
	case f.fs.Changed("canary") && len(r.Steps) == 0:
		r.Steps = []int{f.canary}
	case f.fs.Changed("canary") && r.Steps[0] != f.canary:
		errs = append(errs, fmt.Errorf("--canary %d and --steps %s disagree: the first step is where the canary starts", f.canary, f.steps))
	}
	if len(r.Steps) > 1 && f.stepInterval <= 0 {
		errs = append(errs, errors.New("--steps with more than one step needs --step-interval"))
	}
	if f.stepInterval > 0 {
		r.StepInterval = f.stepInterval.String()
	}
	if f.canaryHeader != "" && !strings.Contains(f.canaryHeader, ":") {
		errs = append(errs, fmt.Errorf("--canary-header %q: want 'Name: value'", f.canaryHeader))
	}
	if f.canaryCookie != "" && !strings.Contains(f.canaryCookie, "=") {
		errs = append(errs, fmt.Errorf("--canary-cookie %q: want name=value", f.canaryCookie))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, usageError(err)
	}
	return r, nil
}

const rolloutSynopsis = `Usage: baton rollout [--percent N | --promote | --abort] [--service NAME] [flags]

Steers the canary that 'baton deploy --canary' (or POST /v1/rollout) started,
or the watch after a deploy, switch or promote. Without a flag it shows the
rollout: colours, share, step, since when, and the judge's last look.

  --percent N   the new version takes N% of requests; a schedule (--steps)
                goes on with the steps above N
  --promote     the new version takes all requests, the old one is drained
                and stopped (during a watch: end the watch now)
  --abort       all requests go back to the old version, the new one is
                drained and stopped (during a watch: move back to the old one)

The 'baton deploy' that started the rollout prints how it ends, and exits 0
only if the new version was promoted. Exits 1 when no rollout runs (409), 2
on misuse.`

func runRollout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cf      clientFlags
		sf      serviceFlag
		percent int
		promote bool
		abort   bool
		asJSON  bool
	)
	fs := newFlagSet("rollout", rolloutSynopsis, stdout)
	sf.register(fs)
	fs.IntVar(&percent, "percent", 0, "give the new version this `share` of requests (0-100)")
	fs.BoolVar(&promote, "promote", false, "promote the new version (during a watch: end it now)")
	fs.BoolVar(&abort, "abort", false, "abort: all requests back to the old version, the new one stopped")
	fs.BoolVar(&asJSON, "json", false, "print the answer as JSON")
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{fs.Changed("percent"), promote, abort} {
		if set {
			n++
		}
	}
	if n > 1 {
		return usageError(errors.New("give one of --percent, --promote and --abort"))
	}
	if fs.Changed("percent") && (percent < 0 || percent > 100) {
		return usageError(fmt.Errorf("--percent %d: want 0-100", percent))
	}
	if err := sf.check(); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	if n == 0 {
		path, err := sf.path(ctx, c, "status")
		if err != nil {
			return err
		}
		st, err := fetchStatus(ctx, c, path)
		if err != nil {
			return sf.serviceError(err)
		}
		if asJSON {
			if st.Rollout == nil {
				_, err = fmt.Fprintln(stdout, "null")
				return err
			}
			b, _ := json.MarshalIndent(st.Rollout, "", "  ")
			_, err = fmt.Fprintf(stdout, "%s\n", b)
			return err
		}
		if st.Rollout == nil {
			fmt.Fprintln(stdout, "no rollout is running")
			return nil
		}
		printRollout(stdout, st.Rollout, time.Now())
		return nil
	}
	var (
		op   = "rollout/promote"
		body io.Reader
	)
	switch {
	case abort:
		op = "rollout/abort"
	case fs.Changed("percent"):
		op = "rollout/percent"
		b, _ := json.Marshal(map[string]int{"percent": percent})
		body = strings.NewReader(string(b))
	}
	path, err := sf.path(ctx, c, op)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return sf.serviceError(err)
	}
	defer resp.Body.Close()
	var sr admin.SteerResponse
	if ok, err := readAnswer(resp.Body, 1<<20, stdout, asJSON, &sr, "the answer"); !ok {
		return err
	}
	fmt.Fprintln(stdout, sr.Message)
	printRollout(stdout, &sr.Rollout, time.Now())
	return nil
}

// printRollout prints a rollout for humans, as part of status.
func printRollout(w io.Writer, r *switcher.RolloutStatus, now time.Time) {
	what := r.Kind
	if r.Version != "" {
		what += " " + r.Version
	}
	switch r.Phase {
	case "canary":
		fmt.Fprintf(w, "\ncanary: %s, %s → %s, %d%% of requests to %s for %s (rollout started %s ago)\n", what, r.Old, r.New, r.Percent, r.New,
			now.Sub(r.StepSince).Round(time.Second), now.Sub(r.Since).Round(time.Second))
		if len(r.Steps) > 0 {
			step := "set by command"
			if r.Step > 0 {
				step = fmt.Sprintf("step %d of %v", r.Step, r.Steps)
			}
			if !r.NextStep.IsZero() {
				step += fmt.Sprintf(", next in %s", r.NextStep.Sub(now).Round(time.Second))
			}
			fmt.Fprintf(w, "  schedule: %s\n", step)
		}
		sticky := r.Sticky
		if sticky == "" {
			sticky = "none (each request placed at random)"
		}
		fmt.Fprintf(w, "  sticky:   %s\n", sticky)
		if len(r.Allow) > 0 {
			fmt.Fprintf(w, "  always to %s: %s\n", r.New, strings.Join(r.Allow, ", "))
		}
	case "watch":
		fmt.Fprintf(w, "\nwatch: %s, %s takes all requests, %s kept running for %s more\n", what, r.New, r.Old,
			max(r.WatchUntil.Sub(now), 0).Round(time.Second))
	case "promoting":
		fmt.Fprintf(w, "\npromoting: %s, %s takes all requests; %s is drained and stopped\n", what, r.New, r.Old)
	case "aborting":
		fmt.Fprintf(w, "\naborting: %s, all requests go to %s again; %s is drained and stopped\n", what, r.Old, r.New)
	}
	if j := r.Judge; j != nil {
		fmt.Fprintf(w, "  judge:    %s: %s\n", j.Verdict, j.Message)
	}
}
