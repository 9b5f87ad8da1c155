package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/switcher"
)

// adminClient is a thin HTTP client of the admin API; every CLI command
// other than serve goes through it, so anything the CLI does is curl-able.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

type clientFlags struct {
	admin     string
	tokenFile string
	ca        string
}

// defaultAdminURL is where the client commands find the admin API without
// --admin or $BATON_ADMIN.
const defaultAdminURL = "http://127.0.0.1:9900"

func (c *clientFlags) register(fs *pflag.FlagSet) {
	c.registerAdmin(fs, envOr("BATON_ADMIN", defaultAdminURL), "admin API `URL` [$BATON_ADMIN]")
}

// registerAdmin registers the admin flags with def as --admin's default.
func (c *clientFlags) registerAdmin(fs *pflag.FlagSet, def, usage string) {
	fs.StringVar(&c.admin, "admin", def, usage)
	fs.StringVar(&c.tokenFile, "admin-token-file", os.Getenv("BATON_ADMIN_TOKEN_FILE"), "`file` holding the admin token [$BATON_ADMIN_TOKEN_FILE; or the token in $BATON_ADMIN_TOKEN]")
	fs.StringVar(&c.ca, "admin-ca", os.Getenv("BATON_ADMIN_CA"), "PEM `file` of the CA (or the certificate itself) to trust for an https --admin, instead of the system's [$BATON_ADMIN_CA]")
}

func (c *clientFlags) client() (*adminClient, error) {
	base := strings.TrimRight(c.admin, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, usageError(fmt.Errorf("--admin %q: want a URL such as http://127.0.0.1:9900", c.admin))
	}
	tok, err := readToken(c.tokenFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// An upload waits this long for baton's "100 Continue" or refusal
	// before it sends the artifact anyway; baton decides at once, so this
	// only matters for a server that ignores Expect.
	tr.ExpectContinueTimeout = 5 * time.Second
	if c.ca != "" {
		if !strings.HasPrefix(base, "https://") {
			return nil, usageError(fmt.Errorf("--admin-ca needs an https --admin URL; --admin is %q", c.admin))
		}
		pool, err := readCertPool("--admin-ca", c.ca, nil)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	// No client timeout: a switch streams for as long as its drain takes.
	return &adminClient{base: base, token: tok, http: &http.Client{Transport: tr}}, nil
}

func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if method != http.MethodGet {
		// Every POST says it is JSON, an empty one too: the admin API
		// refuses a POST without it as a possible web page's form.
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req)
}

// send adds the token to req, sends it, and turns an answer of 300 or more
// into an error carrying the API's message.
func (c *adminClient) send(req *http.Request) (*http.Response, error) {
	method, path := req.Method, req.URL.Path
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w (is 'baton serve' running? set --admin or $BATON_ADMIN)", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		e := &apiError{method: method, path: path, status: resp.Status, code: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return nil, e
	}
	return resp, nil
}

// apiError is an answer of 300 or more from the admin API: its JSON error
// and the fields some errors carry beside it.
type apiError struct {
	method, path, status string
	code                 int
	Message              string `json:"error"`
	// Problems are every problem of a config file that a reload refused.
	Problems []string `json:"errors"`
	// Services are the services there are, with an error about which
	// service a request is for.
	Services []string `json:"services"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.method, e.path, e.status, e.Message)
}

// readAnswer reads a JSON answer of at most limit bytes (all of it if limit
// is 0). With raw it copies the answer to stdout as it is and reports
// false; otherwise it decodes it into v and reports true. what names the
// answer in errors.
func readAnswer(r io.Reader, limit int64, stdout io.Writer, raw bool, v any, what string) (decoded bool, err error) {
	if limit > 0 {
		r = io.LimitReader(r, limit)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", what, err)
	}
	if raw {
		_, err := stdout.Write(b)
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("decoding %s: %w", what, err)
	}
	return true, nil
}

// fetchStatus reads the status at path: GET /v1/status, or GET
// /v1/services/{name}/status.
func fetchStatus(ctx context.Context, c *adminClient, path string) (admin.StatusResponse, error) {
	var st admin.StatusResponse
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("decoding status: %w", err)
	}
	return st, nil
}

const switchSynopsis = `Usage: baton switch [--to blue|green] [--service NAME] [flags]

Moves traffic to the other colour (or to --to). baton health-checks the
target, swaps, drains the requests in flight on the old colour, then stops
its process. Each step is printed as it happens. Exits 0 when traffic moved,
1 when the switch failed (the old colour keeps serving), 2 on misuse.

With --watch, the old colour keeps running for that long after the swap and
a judge compares the new one's answers with the thresholds; if it fails,
traffic moves back to the old colour, the new one is stopped, and the switch
exits 1 (see docs/canary.md).`

func runSwitch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cf     clientFlags
		sf     serviceFlag
		to     string
		asJSON bool
	)
	fs := newFlagSet("switch", switchSynopsis, stdout)
	sf.register(fs)
	fs.StringVar(&to, "to", "", "target `colour` (blue or green); default: the one not live")
	fs.BoolVar(&asJSON, "json", false, "print the raw NDJSON progress lines")
	var wf watchFlags // --watch and the judge's thresholds: rollout.go
	wf.register(fs)
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if to != "" && to != "blue" && to != "green" {
		return usageError(fmt.Errorf("--to %q: want blue or green", to))
	}
	watch, err := wf.request()
	if err != nil {
		return usageError(err)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path, err := sf.path(ctx, c, "switch")
	if err != nil {
		return err
	}
	body, _ := json.Marshal(admin.SwitchRequest{To: to, WatchRequest: watch})
	resp, err := c.do(ctx, http.MethodPost, path, strings.NewReader(string(body)))
	if err != nil {
		return sf.serviceError(err)
	}
	defer resp.Body.Close()
	return printStream(resp.Body, stdout, asJSON)
}

// printStream prints an operation's NDJSON progress and returns an error if
// its last line reports failure or the stream ends without a last line.
func printStream(r io.Reader, stdout io.Writer, raw bool) error {
	return followStream(r, stdout, raw, nil)
}

// followStream is printStream that also hands each line to onLine (if not
// nil), e.g. to note when the swap happened.
func followStream(r io.Reader, stdout io.Writer, raw bool, onLine func(admin.StreamLine)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var last *admin.StreamLine
	for sc.Scan() {
		if raw {
			fmt.Fprintln(stdout, sc.Text())
		}
		var l admin.StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("admin API sent a line that is not JSON: %q", sc.Text())
		}
		if onLine != nil {
			onLine(l)
		}
		if !raw {
			dur := ""
			if l.DurationMS > 0 {
				dur = fmt.Sprintf("  (%s)", time.Duration(l.DurationMS*float64(time.Millisecond)).Round(100*time.Microsecond))
			}
			msg := l.Message
			if l.Error != "" {
				msg += ": " + l.Error
			}
			fmt.Fprintf(stdout, "%s  %-8s %s%s\n", l.Time.Local().Format("15:04:05.000"), l.Step, msg, dur)
		}
		if l.OK != nil {
			last = &l
			for _, w := range lineWarnings(l) {
				fmt.Fprintf(stdout, "warning: %s\n", w)
			}
		}
	}
	if err := sc.Err(); err != nil && last == nil {
		// baton went away in the middle (killed, crashed, restarted): the
		// operation may have got anywhere, and only baton knows where.
		return fmt.Errorf("the admin API closed the stream before the operation finished (%v); check 'baton status'", err)
	}
	switch {
	case last == nil:
		return errors.New("the admin API closed the stream before the operation finished; check 'baton status'")
	case !*last.OK:
		return errors.New(last.Error)
	}
	return nil
}

// lineWarnings returns the warnings carried by an operation's last line.
func lineWarnings(l admin.StreamLine) []string {
	switch {
	case l.Result != nil:
		return l.Result.Warnings
	case l.Deploy != nil:
		return l.Deploy.Warnings
	}
	return nil
}

const rollbackSynopsis = `Usage: baton rollback [--service NAME] [flags]

Brings back the version that was live before the last deploy, switch or
rollback, on the idle colour. If its instance still runs (after a deploy
with --no-stop), baton switches back to it; otherwise, if baton launched it
and its release is still installed, baton starts it again from there and
switches to it. Each step is printed as it happens. A second rollback
returns to the version the first one replaced.

Exits 0 when the previous version serves again; 1 when there is nothing to
roll back to (409, with the reason) or the rollback failed (the current
version keeps serving); 2 on misuse.`

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStreamed(ctx, "rollback", rollbackSynopsis, "rollback", true, args, stdout)
}

// runStreamed runs a client command that takes no flags of its own besides
// --json, the admin flags and, if perService, --service; POSTs to op
// (/v1/op, or /v1/services/NAME/op) and prints the streamed steps.
func runStreamed(ctx context.Context, name, synopsis, op string, perService bool, args []string, stdout io.Writer) error {
	var (
		cf     clientFlags
		sf     serviceFlag
		asJSON bool
	)
	fs := newFlagSet(name, synopsis, stdout)
	if perService {
		sf.register(fs)
	}
	fs.BoolVar(&asJSON, "json", false, "print the raw NDJSON progress lines")
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path := "/v1/" + op
	if perService {
		if path, err = sf.path(ctx, c, op); err != nil {
			return err
		}
	}
	resp, err := c.do(ctx, http.MethodPost, path, nil)
	if err != nil {
		if perService {
			return sf.serviceError(err)
		}
		return err
	}
	defer resp.Body.Close()
	return printStream(resp.Body, stdout, asJSON)
}

const statusSynopsis = `Usage: baton status [--service NAME] [--json] [flags]

Shows which colour is live, each app's health and requests in flight, and
the last switches. While baton has several services, 'baton status'
without --service shows a table instead, a line a service: the hosts it
takes, its live colour, the app version on each colour, the health of the
live colour, its requests in flight and its last deploy.

--json prints the admin API's answer: GET /v1/services/NAME/status with
--service or while baton has one service (GET /v1/status), else GET
/v1/services.

Exits 1 when the live colour of a service shown is down (its health check
fails), so that it can serve as a monitoring check; 2 on misuse.`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cf     clientFlags
		sf     serviceFlag
		asJSON bool
	)
	fs := newFlagSet("status", statusSynopsis, stdout)
	sf.register(fs)
	fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := sf.check(); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	path := "/v1/status"
	if sf.set() {
		path = "/v1/services/" + url.PathEscape(sf.name) + "/status"
	} else {
		list, raw, err := fetchServicesRaw(ctx, c)
		switch {
		case errors.Is(err, errNoServicesAPI):
			// A baton from before services: one, on /v1/status.
		case err != nil:
			return err
		case len(list.Services) != 1:
			if asJSON {
				_, err = stdout.Write(raw)
			} else {
				printServices(stdout, list, time.Now())
			}
			return errors.Join(err, servicesDown(list.Services))
		}
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return sf.serviceError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading status: %w", err)
	}
	var st admin.StatusResponse
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("decoding status: %w", err)
	}
	if asJSON {
		if _, err := stdout.Write(b); err != nil {
			return err
		}
	} else {
		if sf.set() {
			fmt.Fprintf(stdout, "service: %s   ", st.Service)
		}
		printStatus(stdout, st, time.Now())
	}
	if down := liveDown(st.Upstreams); down != "" {
		if sf.set() {
			return fmt.Errorf("service %s: %s", st.Service, down)
		}
		return errors.New(down)
	}
	return nil
}

// liveDown says that the live colour among ups is down, and why; "" if
// it is not (or has not been checked yet).
func liveDown(ups []switcher.UpstreamStatus) string {
	for _, u := range ups {
		if u.Live && u.Health != nil && !u.Health.Healthy {
			return fmt.Sprintf("the live colour, %s, is down: %s", u.Color, u.Health.Error)
		}
	}
	return ""
}

// servicesDown returns an error naming each of svcs whose live colour is
// down; nil if none is.
func servicesDown(svcs []admin.ServiceSummary) error {
	var down []string
	for _, s := range svcs {
		if d := liveDown(s.Upstreams); d != "" {
			down = append(down, s.Name+": "+d)
		}
	}
	switch len(down) {
	case 0:
		return nil
	case 1:
		return errors.New("service " + down[0])
	}
	return fmt.Errorf("%d services are down:\n  %s", len(down), strings.Join(down, "\n  "))
}

// printServices prints the table of services for humans.
func printServices(w io.Writer, list admin.ServicesResponse, now time.Time) {
	if len(list.Services) == 0 {
		fmt.Fprintf(w, "no services   (baton %s)\n", list.BatonVersion)
		return
	}
	fmt.Fprintf(w, "%d services   (baton %s)\n\n", len(list.Services), list.BatonVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tROUTING\tLIVE\tBLUE\tGREEN\tHEALTH\tIN FLIGHT\tLAST DEPLOY")
	for _, s := range list.Services {
		versions := map[string]string{}
		var inFlight int64
		health := "-"
		for _, u := range s.Upstreams {
			v := "-"
			if u.Instance != nil && u.Instance.AppVersion != "" {
				v = u.Instance.AppVersion
			}
			versions[u.Color] = v
			inFlight += u.InFlight
			if u.Live {
				health = healthText(u.Health, now)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Name, s.Routing, s.Live, orDash(versions["blue"]), orDash(versions["green"]),
			shorten(health, 60), inFlight, lastDeployText(s, now))
	}
	tw.Flush()
	for _, s := range list.Services {
		if s.StateError != "" {
			fmt.Fprintf(w, "\n%s: STATE NOT SAVED: %s\n", s.Name, s.StateError)
		}
		if r := s.Rollout; r != nil {
			fmt.Fprintf(w, "\n%s: %s of %s, %d%% of requests to %s ('baton rollout -s %s' for more)\n", s.Name, r.Phase, r.Version, r.Percent, r.New, s.Name)
		}
	}
	fmt.Fprintln(w, "\n'baton status --service NAME' shows one service in full.")
}

// healthText is a colour's health for humans.
func healthText(h *switcher.Health, now time.Time) string {
	switch {
	case h == nil:
		return "not checked yet"
	case h.Healthy:
		return "healthy for " + now.Sub(h.Since).Round(time.Second).String()
	}
	return "DOWN for " + now.Sub(h.Since).Round(time.Second).String() + ": " + h.Error
}

// lastDeployText is the LAST DEPLOY column: the operation running, else
// the last one that ended.
func lastDeployText(s admin.ServiceSummary, now time.Time) string {
	if op := s.Operation; op != nil {
		return fmt.Sprintf("running: %s to %s, step %s, for %s", op.Kind, op.To, op.Step, now.Sub(op.Started).Round(time.Second))
	}
	d := s.LastDeploy
	if d == nil {
		return "none"
	}
	what := d.Kind
	if d.Version != "" {
		what += " " + d.Version
	}
	outcome := "ok"
	switch {
	case d.Interrupted:
		outcome = "INTERRUPTED"
	case !d.OK:
		outcome = "FAILED"
	}
	return fmt.Sprintf("%s %s→%s %s, %s ago", what, d.From, d.To, outcome, now.Sub(d.Started.Add(d.Duration)).Round(time.Second))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shorten cuts s to n runes, marking the cut.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func printStatus(w io.Writer, st admin.StatusResponse, now time.Time) {
	fmt.Fprintf(w, "live: %s   (baton %s)\n\n", st.Live, st.BatonVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLOUR\tADDRESS\tLIVE\tAPP\tIN FLIGHT\tHEALTH")
	for _, u := range st.Upstreams {
		live := ""
		if u.Live {
			live = "*"
		}
		h := healthText(u.Health, now)
		app := "-" // an app baton did not launch
		if in := u.Instance; in != nil {
			app = in.AppVersion
			if in.PID > 0 {
				app += fmt.Sprintf(" pid %d", in.PID)
			}
			if in.Host != "" {
				app += " on " + in.Host
			}
			if !in.Started.IsZero() {
				app += ", up " + now.Sub(in.Started).Round(time.Second).String()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", u.Color, u.Addr, live, app, u.InFlight, h)
	}
	tw.Flush()
	for _, u := range st.Upstreams {
		if tr := u.Traffic; tr != nil && tr.Status5xx > 0 {
			fmt.Fprintf(w, "%s answered %d of %d request(s) with 5xx since %s\n", u.Color, tr.Status5xx, tr.Requests, tr.Since.Local().Format("15:04:05"))
		}
	}
	for _, warning := range st.Warnings {
		fmt.Fprintf(w, "\nWARNING: %s\n", warning)
	}
	if st.StateError != "" {
		fmt.Fprintf(w, "\nSTATE NOT SAVED: %s\n(a restart of baton now would forget what changed since the last save)\n", st.StateError)
	}
	if p := st.Previous; p != nil {
		what := p.Color
		if p.Instance != nil && p.Instance.AppVersion != "" {
			what = p.Instance.AppVersion + " on " + p.Color
		}
		fmt.Fprintf(w, "\nrollback would bring back: %s\n", what)
	}
	if st.Rollout != nil {
		printRollout(w, st.Rollout, now)
	}
	if st.Operation != nil {
		fmt.Fprintf(w, "\nrunning: %s to %s (%s), step %s, for %s\n", st.Operation.Kind, st.Operation.To, st.Operation.ID,
			st.Operation.Step, now.Sub(st.Operation.Started).Round(time.Millisecond))
	}
	if len(st.History) == 0 {
		fmt.Fprintln(w, "\nno switches yet")
		return
	}
	fmt.Fprintln(w, "\nlast switches:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := len(st.History) - 1; i >= 0 && i >= len(st.History)-10; i-- {
		d := st.History[i]
		outcome := "ok"
		switch {
		case d.Interrupted:
			outcome = "INTERRUPTED: " + strings.TrimPrefix(d.Error, "interrupted: ")
		case !d.OK:
			outcome = "FAILED: " + d.Error
		}
		what := d.Kind
		if d.Version != "" {
			what += " " + d.Version
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s → %s\t%s\tdrained %d\t%s\n", d.Started.Local().Format("2006-01-02 15:04:05"),
			what, d.From, d.To, d.Duration.Round(time.Millisecond), d.Drained, outcome)
	}
	tw.Flush()
}

const upgradeSynopsis = `Usage: baton upgrade [flags]

Replaces the running 'baton serve' with the baton binary now at the same
path (install the new binary first, e.g. with mv over the old one). The new
process takes over the listening sockets and the state; once it is ready the
old one stops accepting, finishes its requests in flight and exits. App
instances are not touched. If the new binary fails to start or is not ready
in time, the old one keeps serving and this command exits 1.

The same upgrade runs on SIGHUP or SIGUSR2 to 'baton serve'.`

func runUpgrade(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runStreamed(ctx, "upgrade", upgradeSynopsis, "upgrade", false, args, stdout)
}
