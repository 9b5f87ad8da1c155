package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/switcher"
)

const deploySynopsis = `Usage: baton deploy --version V [--artifact FILE|URL] [--service NAME] [flags]

Ships a new version of the app and moves traffic to it, in one call: baton
takes the artifact (uploaded from here; read on baton's machine with
--server-path; downloaded by baton if it is an http(s) URL), starts it on the
idle colour's port with the --run command of 'baton serve' (on baton's
machine, or on the --ssh host), health-checks it, swaps, drains the old
instance and stops it. Each step is printed as it happens.

With --canary or --steps the new version first takes a share of the
requests beside the old one; 'baton rollout' steps it up, promotes or aborts
it, and a judge rolls it back on its own if it answers worse than the old one
(see docs/canary.md). With --watch the old version keeps running for a while
after the swap, and traffic moves back to it if the new one fails the judge.

Exits 0 when the new version serves, 1 when the deploy failed (the old
version keeps serving; the new instance was stopped and the last lines of its
log are printed) or was aborted or rolled back, 2 on misuse.

Examples:
  baton deploy --artifact build/libs/app.jar --version 1.4.2
  baton deploy --artifact /srv/builds/app-1.4.2.jar --server-path --version 1.4.2
  curl -H "Authorization: Bearer $BATON_ADMIN_TOKEN" -H 'Content-Type: application/octet-stream' \
       --data-binary @app.jar 'http://127.0.0.1:9900/v1/deploy?version=1.4.2&name=app.jar'
  baton deploy --artifact app.jar --version 1.4.2 --canary 10 --sticky --canary-header 'X-Canary: 1'
  baton deploy --artifact app.jar --version 1.4.2 --steps 10,25,50,100 --step-interval 2m --watch 5m`

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9._+-]`)

func runDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cf         clientFlags
		sf         serviceFlag
		artifact   string
		ver        string
		sum        string
		serverPath bool
		asJSON     bool
	)
	fs := newFlagSet("deploy", deploySynopsis, stdout)
	sf.register(fs)
	fs.StringVar(&artifact, "artifact", "", "the app `file` (a jar, a binary, ...) or an http(s) URL for baton to download; omit if --run needs none")
	fs.StringVar(&ver, "version", "", "the app's `version`, e.g. 1.4.2 (letters, digits, . _ + -)")
	fs.BoolVar(&serverPath, "server-path", false, "--artifact is a path on baton's machine: read it there instead of uploading it")
	fs.StringVar(&sum, "sha256", "", "the artifact's expected sha256 (`hex`); baton refuses a different file")
	fs.BoolVar(&asJSON, "json", false, "print the raw NDJSON progress lines")
	var cn canaryFlags // --canary, --steps, --watch, ...: rollout.go
	cn.register(fs)
	var pf deployProbeFlags // --probe, --probe-plot, --max-failures: deploy_probe.go
	pf.register(fs)
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if ver == "" {
		return usageError(errors.New("--version is required"))
	}
	if err := switcher.CheckVersion(ver); err != nil {
		return usageError(fmt.Errorf("--version: %w", err))
	}
	isURL := strings.HasPrefix(artifact, "http://") || strings.HasPrefix(artifact, "https://")
	if serverPath && (artifact == "" || isURL) {
		return usageError(errors.New("--server-path needs --artifact with a path on baton's machine"))
	}
	op, payload, extra, err := cn.request(admin.DeployRequest{Version: ver, Artifact: artifact, SHA256: sum})
	if err != nil {
		return err
	}
	if err := sf.check(); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	endpoint, err := sf.path(ctx, c, op)
	if err != nil {
		return err
	}

	// The probe runs from before the request until after the deploy, so
	// that it sees the whole hand-over from a user's side; its result goes
	// to baton's status page too.
	pf.send = func(rec admin.ProbeRecord) error { return sendProbe(ctx, c, endpoint, rec) }
	if err := pf.start(ctx); err != nil {
		return err
	}
	defer pf.stop()
	var resp *http.Response
	if artifact == "" || isURL || serverPath {
		if serverPath && !filepath.IsAbs(artifact) {
			return usageError(fmt.Errorf("--artifact %q: with --server-path, give an absolute path", artifact))
		}
		body, _ := json.Marshal(payload)
		resp, err = c.do(ctx, http.MethodPost, endpoint, strings.NewReader(string(body)))
	} else {
		resp, err = uploadDeploy(ctx, c, endpoint, extra, artifact, ver, sum, stdout, asJSON)
	}
	if err != nil {
		return cancelled(ctx, sf.serviceError(err))
	}
	defer resp.Body.Close()
	err = followStream(resp.Body, stdout, asJSON, pf.onLine)
	return pf.finish(stdout, cancelled(ctx, err))
}

// cancelled turns the error of a deploy that Ctrl-C (SIGINT, what a Jenkins
// abort sends) or SIGTERM interrupted into what happened: closing the
// request cancels the deploy on baton's side, which stops the new instance
// if it has not taken traffic yet. Once the swap has happened the deploy
// completes, since stopping then would drop the requests it serves.
func cancelled(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	return errors.New("deploy cancelled: baton stops the new instance unless traffic had already moved to it, in which case the deploy completes; check 'baton status'")
}

// uploadDeploy sends the file at path as the body of POST endpoint
// (/v1/deploy or /v1/rollout, or the same of a named service), with its sha256 so that baton can tell a
// truncated upload, and the extra fields in the query.
func uploadDeploy(ctx context.Context, c *adminClient, endpoint string, extra url.Values, path, ver, want string, stdout io.Writer, quiet bool) (*http.Response, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("artifact: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("artifact %s is not a regular file", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read artifact: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && !strings.EqualFold(want, sum) {
		return nil, fmt.Errorf("artifact %s has sha256 %s; --sha256 says %s", path, sum, want)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	name := unsafeNameChars.ReplaceAllString(filepath.Base(path), "_")
	q := url.Values{"version": {ver}, "name": {name}, "sha256": {sum}}
	for k, v := range extra {
		if _, ok := q[k]; !ok {
			q[k] = v
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+endpoint+"?"+q.Encode(), f)
	if err != nil {
		return nil, err
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	// Ask before sending: baton answers a wrong token (401), a running
	// operation (409) or an artifact over its limit (413) without reading
	// the body, and the file is then never sent. The admin API (Go's
	// net/http) sends 100 Continue only when the deploy reads the body.
	req.Header.Set("Expect", "100-continue")
	if !quiet {
		fmt.Fprintf(stdout, "uploading %s: %d bytes, sha256 %s\n", path, fi.Size(), sum)
	}
	return c.send(req)
}
