package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/probe"
)

// deployProbeFlags runs 'baton probe' alongside a deploy: --probe URL sends
// steady load at the public URL while the deploy runs and reports what users
// saw with the deploy's own verdict.
type deployProbeFlags struct {
	url         string
	rate        int
	plot        string
	maxFailures int

	p *probe.Probe
	// send, if set, hands the probe's verdict and plot to baton for its
	// status page (sendProbe).
	send  func(admin.ProbeRecord) error
	mu    sync.Mutex
	opID  string // the deploy's ID, from its stream
	begin time.Time
	swap  time.Time
	label string
}

func (f *deployProbeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "probe", "", "send steady load at this public `URL` during the deploy and fail if users saw failures")
	fs.IntVar(&f.rate, "probe-rate", probe.DefaultRate, "probe requests per second")
	fs.StringVar(&f.plot, "probe-plot", "", "write the probe's timeline to `file` (.svg or .png)")
	fs.IntVar(&f.maxFailures, "max-failures", 0, "failed probe requests tolerated before the deploy counts as failed")
}

func (f *deployProbeFlags) start(ctx context.Context) error {
	if f.url == "" {
		if f.plot != "" {
			return usageError(errors.New("--probe-plot needs --probe URL"))
		}
		return nil
	}
	p, err := probe.Start(ctx, probe.Config{URL: f.url, Rate: f.rate})
	if err != nil {
		return usageError(fmt.Errorf("--probe: %w", err))
	}
	f.p = p
	f.begin = time.Now()
	// A moment of steady load first, so the plot shows the old version.
	time.Sleep(500 * time.Millisecond)
	return nil
}

// onLine notes the swap (or the decisive step) for the plot's mark.
func (f *deployProbeFlags) onLine(l admin.StreamLine) {
	if f.p == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case l.Deploy != nil && l.Deploy.ID != "":
		f.opID = l.Deploy.ID
	case l.Result != nil && l.Result.ID != "":
		f.opID = l.Result.ID
	}
	switch l.Step {
	case "start":
		f.label = l.Message
	case "swap", "promote", "rollback":
		f.swap = l.Time
	}
}

// finish stops the probe after a short tail, prints its summary and plot,
// and returns deployErr, or an error if the probe saw too many failures.
func (f *deployProbeFlags) finish(w io.Writer, deployErr error) error {
	if f.p == nil {
		return deployErr
	}
	time.Sleep(500 * time.Millisecond)
	f.mu.Lock()
	label := "deploy"
	if f.label != "" {
		label = f.label
	}
	f.p.Mark(probe.Mark{Start: f.begin, End: time.Now(), At: f.swap, Label: label, Failed: deployErr != nil})
	f.mu.Unlock()
	opID := f.opID
	rep := f.p.Stop()
	f.p = nil
	fmt.Fprintf(w, "\nprobe %s:\n%s\n", f.url, rep.Summary(f.maxFailures))
	if f.send != nil {
		var svg strings.Builder
		err := rep.WritePlot(&svg, "svg")
		if err == nil {
			err = f.send(admin.ProbeRecord{ProbeInfo: admin.ProbeInfo{DeployID: opID, Pass: rep.Verdict(f.maxFailures).Pass,
				Summary: rep.Summary(f.maxFailures)}, SVG: svg.String()})
		}
		if err != nil {
			// The deploy's outcome does not depend on it: say so and go on.
			fmt.Fprintf(w, "(the probe's result could not be shown on baton's status page: %v)\n", err)
		}
	}
	if f.plot != "" {
		if err := rep.WritePlotFile(f.plot); err != nil {
			return errors.Join(deployErr, fmt.Errorf("probe plot: %w", err))
		}
		fmt.Fprintf(w, "timeline plot: %s\n", f.plot)
	}
	if v := rep.Verdict(f.maxFailures); !v.Pass && deployErr == nil {
		return fmt.Errorf("the deploy finished but the probe failed: %s", v)
	}
	return deployErr
}

func (f *deployProbeFlags) stop() {
	if f.p != nil {
		f.p.Stop()
	}
}

// sendProbe hands a probe's record to baton (POST .../probe beside the
// deploy's endpoint), for the status page.
func sendProbe(ctx context.Context, c *adminClient, deployEndpoint string, rec admin.ProbeRecord) error {
	endpoint := strings.TrimSuffix(strings.TrimSuffix(deployEndpoint, "/deploy"), "/rollout") + "/probe"
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("POST %s: %s %s", endpoint, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
