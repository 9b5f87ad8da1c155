package admin

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// Roller is what the rollout endpoints need of the switcher. POST
// /v1/rollout and POST /v1/rollout/{action} are served for a service
// whose Controller implements it.
type Roller interface {
	Rollout(ctx context.Context, req switcher.RolloutRequest, emit func(switcher.Event)) (switcher.DeployResult, error)
	Steer(cmd switcher.RolloutCommand) (switcher.RolloutStatus, error)
}

// WatchRequest holds the fields that ask for a watch after traffic moves
// to a new version; POST /v1/switch, /v1/deploy and /v1/rollout take them.
// The zero value asks for no watch and judges a canary with the defaults.
type WatchRequest struct {
	// Watch is how long to keep the old version running and judge the new
	// one after the traffic moved, e.g. "2m"; empty: no watch.
	Watch string `json:"watch,omitempty"`
	// MaxErrorRate is the highest share of 5xx answers (0-1) the new
	// version may give; 0: relative to the old version.
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	// MaxP99 is the highest p99 answer time, e.g. "500ms"; empty:
	// relative to the old version.
	MaxP99 string `json:"max_p99,omitempty"`
	// MinRequests is how many answers the judge waits for; 0: the default.
	MinRequests int `json:"min_requests,omitempty"`
	// JudgeWindow is how far back the judge looks, e.g. "1m"; empty: the
	// default.
	JudgeWindow string `json:"judge_window,omitempty"`
}

// watch converts w, reporting every bad field.
func (w WatchRequest) watch() (switcher.Watch, error) {
	var (
		out  switcher.Watch
		errs []error
	)
	dur := func(name, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("%s %q: want a duration such as 90s or 2m", name, s))
		}
		return d
	}
	out.Duration = dur("watch", w.Watch)
	out.MaxP99 = dur("max_p99", w.MaxP99)
	out.Window = dur("judge_window", w.JudgeWindow)
	out.MaxErrorRate = w.MaxErrorRate
	out.MinRequests = w.MinRequests
	if w.MaxErrorRate < 0 || w.MaxErrorRate > 1 {
		errs = append(errs, fmt.Errorf("max_error_rate %v: want a share 0-1, e.g. 0.05 for 5%%", w.MaxErrorRate))
	}
	if w.MinRequests < 0 {
		errs = append(errs, fmt.Errorf("min_requests %d is negative", w.MinRequests))
	}
	if err := errors.Join(errs...); err != nil {
		return out, withStatus(http.StatusBadRequest, err)
	}
	return out, nil
}

// watchFromQuery reads a WatchRequest from the query of an upload.
func watchFromQuery(q url.Values) (WatchRequest, error) {
	w := WatchRequest{Watch: q.Get("watch"), MaxP99: q.Get("max_p99"), JudgeWindow: q.Get("judge_window")}
	var errs []error
	if s := q.Get("max_error_rate"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("max_error_rate %q: want a share 0-1", s))
		}
		w.MaxErrorRate = v
	}
	if s := q.Get("min_requests"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("min_requests %q: want a number", s))
		}
		w.MinRequests = v
	}
	if err := errors.Join(errs...); err != nil {
		return w, withStatus(http.StatusBadRequest, err)
	}
	return w, nil
}

// RolloutRequest is the JSON body of POST /v1/rollout: a deploy whose new
// version first takes a share of the requests. To upload the artifact,
// send it as the body (application/octet-stream) with the fields as query
// parameters, steps as "10,25,50,100" and sticky as "true".
type RolloutRequest struct {
	DeployRequest
	// Steps are the new version's shares in per cent, rising, e.g.
	// [10, 25, 50, 100]; it starts at the first. A last step of 100
	// promotes.
	Steps []int `json:"steps"`
	// StepInterval is the time between steps, e.g. "2m"; empty: step,
	// promote and abort only on command (POST /v1/rollout/{action}).
	StepInterval string `json:"step_interval,omitempty"`
	// Sticky keeps each client on one version with a cookie baton sets
	// (switcher.StickyCookieOf the service: baton_canary_<service>). StickyHeader and StickyCookie do it
	// with a header or cookie the app already has. At most one of the three.
	Sticky       bool   `json:"sticky,omitempty"`
	StickyHeader string `json:"sticky_header,omitempty"`
	StickyCookie string `json:"sticky_cookie,omitempty"`
	// CanaryHeader ("X-Canary: 1") and CanaryCookie ("name=value") send
	// matching requests to the new version whatever its share.
	CanaryHeader string `json:"canary_header,omitempty"`
	CanaryCookie string `json:"canary_cookie,omitempty"`
}

// rollout converts r, a request to service, reporting every bad field.
func (r RolloutRequest) rollout(service string) (switcher.RolloutRequest, error) {
	out := switcher.RolloutRequest{
		DeployRequest: switcher.DeployRequest{Version: r.Version, Artifact: r.Artifact, SHA256: r.SHA256},
		Steps:         r.Steps,
		Rules:         switcher.SplitRules{StickyHeader: r.StickyHeader, StickyAppCookie: r.StickyCookie},
	}
	var errs []error
	w, err := r.WatchRequest.watch()
	if err != nil {
		errs = append(errs, err)
	}
	out.Watch = w
	if r.Sticky {
		out.Rules.StickyCookie = switcher.StickyCookieOf(service)
	}
	if r.StepInterval != "" {
		d, err := time.ParseDuration(r.StepInterval)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("step_interval %q: want a duration such as 2m", r.StepInterval))
		}
		out.StepInterval = d
	}
	if r.CanaryHeader != "" {
		name, value, ok := strings.Cut(r.CanaryHeader, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" || value == "" {
			errs = append(errs, fmt.Errorf("canary_header %q: want \"Name: value\"", r.CanaryHeader))
		}
		out.Rules.AllowHeader, out.Rules.AllowHeaderValue = name, value
	}
	if r.CanaryCookie != "" {
		name, value, ok := strings.Cut(r.CanaryCookie, "=")
		if !ok || name == "" || value == "" {
			errs = append(errs, fmt.Errorf("canary_cookie %q: want name=value", r.CanaryCookie))
		}
		out.Rules.AllowCookie, out.Rules.AllowCookieValue = name, value
	}
	if err := errors.Join(errs...); err != nil {
		return out, withStatus(http.StatusBadRequest, err)
	}
	return out, nil
}

// rolloutFromQuery reads a RolloutRequest from the query of an upload.
func rolloutFromQuery(q url.Values) (RolloutRequest, error) {
	r := RolloutRequest{
		DeployRequest: DeployRequest{Version: q.Get("version"), Artifact: q.Get("name"), SHA256: q.Get("sha256")},
		StepInterval:  q.Get("step_interval"), StickyHeader: q.Get("sticky_header"), StickyCookie: q.Get("sticky_cookie"),
		CanaryHeader: q.Get("canary_header"), CanaryCookie: q.Get("canary_cookie"),
	}
	var errs []error
	w, err := watchFromQuery(q)
	if err != nil {
		errs = append(errs, err)
	}
	r.WatchRequest = w
	if s := q.Get("steps"); s != "" {
		steps, err := ParseSteps(s)
		if err != nil {
			errs = append(errs, err)
		}
		r.Steps = steps
	}
	if s := q.Get("sticky"); s != "" {
		v, err := strconv.ParseBool(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("sticky %q: want true or false", s))
		}
		r.Sticky = v
	}
	if err := errors.Join(errs...); err != nil {
		return r, withStatus(http.StatusBadRequest, err)
	}
	return r, nil
}

// ParseSteps parses "10,25,50,100" into per-cent shares.
func ParseSteps(s string) ([]int, error) {
	var steps []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(f), "%"))
		if err != nil {
			return nil, fmt.Errorf("steps %q: want per-cent numbers separated by commas, e.g. 10,25,50,100", s)
		}
		steps = append(steps, n)
	}
	return steps, nil
}

// Query returns r's fields as the query of an upload, the artifact's file
// name as name.
func (r RolloutRequest) Query(name string) url.Values {
	q := url.Values{"version": {r.Version}, "name": {name}}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("sha256", r.SHA256)
	var steps []string
	for _, p := range r.Steps {
		steps = append(steps, strconv.Itoa(p))
	}
	set("steps", strings.Join(steps, ","))
	set("step_interval", r.StepInterval)
	if r.Sticky {
		q.Set("sticky", "true")
	}
	set("sticky_header", r.StickyHeader)
	set("sticky_cookie", r.StickyCookie)
	set("canary_header", r.CanaryHeader)
	set("canary_cookie", r.CanaryCookie)
	for k, v := range r.WatchRequest.Query() {
		q[k] = v
	}
	return q
}

// Query returns w's fields as (part of) the query of an upload.
func (w WatchRequest) Query() url.Values {
	q := url.Values{}
	if w.Watch != "" {
		q.Set("watch", w.Watch)
	}
	if w.MaxErrorRate != 0 {
		q.Set("max_error_rate", strconv.FormatFloat(w.MaxErrorRate, 'g', -1, 64))
	}
	if w.MaxP99 != "" {
		q.Set("max_p99", w.MaxP99)
	}
	if w.MinRequests != 0 {
		q.Set("min_requests", strconv.Itoa(w.MinRequests))
	}
	if w.JudgeWindow != "" {
		q.Set("judge_window", w.JudgeWindow)
	}
	return q
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request, svc Service) error {
	rl, ok := svc.Controller.(Roller)
	if !ok {
		return unsupported(r, svc, "rollouts")
	}
	var (
		body   RolloutRequest
		upload bool
	)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/octet-stream":
		upload = true
		var err error
		if body, err = rolloutFromQuery(r.URL.Query()); err != nil {
			return err
		}
		if body.Artifact, err = uploadName(svc.Deploy, body.Artifact); err != nil {
			return err
		}
	case "application/json":
		if err := decodeBody(w, r, &body); err != nil {
			return err
		}
	default:
		return withStatus(http.StatusUnsupportedMediaType,
			fmt.Errorf("Content-Type %q: send JSON, or the artifact itself as application/octet-stream", ct))
	}
	if body.Version == "" {
		return withStatus(http.StatusBadRequest, errors.New(`the request needs "version"`))
	}
	if err := switcher.CheckVersion(body.Version); err != nil {
		return withStatus(http.StatusBadRequest, err)
	}
	req, err := body.rollout(svc.Name)
	if err != nil {
		return err
	}
	art, err := s.takeArtifact(w, r, svc, upload, body.Artifact, body.SHA256)
	if err != nil {
		return err
	}
	defer art.cleanup()
	req.Artifact, req.SHA256 = art.path, art.sum

	st := newStream(w)
	res, err := rl.Rollout(r.Context(), req, art.emitter(st))
	if err != nil && !st.started {
		return operationError(err)
	}
	last := deployLine(res, art.sum, err, fmt.Sprintf("rolled out %s to %s in %s", res.Version, res.To, res.Duration.Round(time.Millisecond)))
	if err != nil {
		last.Message = "rollout failed"
	}
	st.line(last)
	return nil
}

// SteerRequest is the JSON body of POST /v1/rollout/percent; promote and
// abort take none.
type SteerRequest struct {
	Percent *int `json:"percent"`
}

// SteerResponse is the answer to POST /v1/rollout/{action}.
type SteerResponse struct {
	Message string                 `json:"message"`
	Rollout switcher.RolloutStatus `json:"rollout"`
}

func (s *Server) steer(w http.ResponseWriter, r *http.Request, svc Service) error {
	rl, ok := svc.Controller.(Roller)
	if !ok {
		return unsupported(r, svc, "rollouts")
	}
	cmd := switcher.RolloutCommand{Action: r.PathValue("action")}
	var msg string
	switch cmd.Action {
	case "percent":
		var body SteerRequest
		if err := decodeBody(w, r, &body); err != nil {
			return err
		}
		if body.Percent == nil {
			return withStatus(http.StatusBadRequest, errors.New(`the body needs "percent"`))
		}
		cmd.Percent = *body.Percent
		msg = fmt.Sprintf("the new version takes %d%% of requests", cmd.Percent)
	case "promote":
		msg = "promoting: the new version takes all requests, the old one is drained and stopped"
	case "abort":
		msg = "aborting: all requests go back to the old version, the new one is drained and stopped"
	default:
		return withStatus(http.StatusNotFound, fmt.Errorf("no such rollout action %q; use percent, promote or abort", cmd.Action))
	}
	// Steer answers with the rollout as the command leaves it
	// ("promoting", "aborting"), so whether it was a watch is read
	// before.
	before := svc.Controller.Status().Rollout
	st, err := rl.Steer(cmd)
	switch {
	case errors.Is(err, switcher.ErrNoRollout):
		return withStatus(http.StatusConflict, err)
	case errors.Is(err, switcher.ErrInvalid):
		return withStatus(http.StatusBadRequest, err)
	case err != nil:
		return err
	}
	if before != nil && before.Phase == "watch" {
		switch cmd.Action {
		case "promote":
			msg = "ending the watch: the old version is stopped"
		case "abort":
			msg = "rolling back: all requests go back to the old version, the new one is drained and stopped"
		}
	}
	writeJSON(w, http.StatusOK, SteerResponse{Message: msg, Rollout: st})
	return nil
}
