// Package admin is baton's control API: JSON over HTTP on a loopback
// listener, behind a bearer token. CI calls it (directly with curl or through
// the baton CLI) to switch colours and read status. Long operations stream
// their progress as NDJSON, one Event a line, so a CI log shows each step as
// it happens; the last line says whether the operation succeeded.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// MaxBodyBytes bounds admin request bodies; the API takes small JSON only.
const MaxBodyBytes = 64 << 10

// Controller is what the API needs of the switcher.
type Controller interface {
	Status() switcher.Status
	Switch(ctx context.Context, req switcher.SwitchRequest, emit func(switcher.Event)) (switcher.Result, error)
}

// Config configures a Server.
type Config struct {
	// Token is the bearer token every request must carry. Empty means no
	// token: only loopback clients are accepted.
	Token string
	// Version is baton's own version, reported by status.
	Version string
	// Metrics, if set, is served at GET /metrics (behind the same auth).
	Metrics http.Handler
	Logger  *slog.Logger
	// Upgrade, if set, serves POST /v1/upgrade: replace this baton with a
	// new binary without closing its sockets.
	Upgrade Upgrader
	// Reload, if set, serves POST /v1/reload: read the config file again
	// and apply it. Nil means this baton has no config file to reload.
	Reload Reloader
	// Stopper, if set, serves POST /v1/services/{name}/stop: stop the app
	// instances of a service a reload removed.
	Stopper ServiceStopper
	// Warnings, if set, returns what the checks of baton's settings found
	// that did not stop it (an SSH host out of reach), for status.
	Warnings func() []string
}

// Server is the admin API. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg    Config
	svcs   Services
	mux    *http.ServeMux
	logger *slog.Logger
	// createFile creates the file an upload or download is written to; a
	// test replaces it to write to /dev/full.
	createFile func(name string) (*os.File, error)
	// done is closed when the HTTP server shuts down: streams that would
	// run for ever (GET /v1/events) end then, so that a shutdown does not
	// wait out its grace for them.
	done     chan struct{}
	doneOnce sync.Once

	probesMu sync.Mutex
	probes   map[string]ProbeRecord // the last probed deploy of each service, by name
}

// New returns a Server for the services svcs. The routes under
// /v1/services/{name}/ drive one service each; the older routes without a
// name (/v1/status, /v1/switch, /v1/deploy, /v1/rollback, /v1/rollout...)
// drive the only service while there is one, and answer 400 naming the
// services while there are several.
func New(cfg Config, svcs Services) *Server {
	s := &Server{cfg: cfg, svcs: svcs, mux: http.NewServeMux(), logger: cfg.Logger, done: make(chan struct{}), createFile: func(name string) (*os.File, error) {
		return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	}}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	for _, rt := range []struct {
		pattern string
		fn      serviceHandler
	}{
		{"GET %s/status", s.status},
		{"POST %s/switch", s.switchColor},
		{"POST %s/deploy", s.deploy},
		{"POST %s/rollback", s.rollback},
		{"POST %s/rollout", s.rollout},
		{"POST %s/rollout/{action}", s.steer},
		{"POST %s/probe", s.saveProbe},
		{"GET %s/probe", s.getProbe},
	} {
		s.mux.Handle(fmt.Sprintf(rt.pattern, "/v1"), s.handle(s.legacy(rt.fn)))
		s.mux.Handle(fmt.Sprintf(rt.pattern, "/v1/services/{name}"), s.handle(s.named(rt.fn)))
	}
	s.mux.Handle("GET /v1/services", s.handle(s.listServices))
	s.mux.Handle("GET /v1/events", s.handle(s.events))
	s.mux.Handle("POST /v1/reload", s.handle(s.reload))
	if cfg.Stopper != nil {
		s.mux.Handle("POST /v1/services/{name}/stop", s.handle(s.stopService))
	}
	if cfg.Upgrade != nil {
		s.mux.Handle("POST /v1/upgrade", s.handle(s.upgrade))
	}
	if cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", cfg.Metrics)
	}
	s.mux.Handle("/", s.handle(s.notFound))
	return s
}

// ServeHTTP refuses requests a web page could have made (see
// checkBrowser), authenticates r and routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.checkBrowser(r); err != nil {
		writeError(w, err)
		return
	}
	if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.servePage(w, r) // static, no data: the page sends the token itself
		return
	}
	if err := s.authorize(r); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
		}
		writeError(w, err)
		return
	}
	if err := checkContentType(r); err != nil {
		writeError(w, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// NewHTTPServer returns an http.Server for the admin API with timeouts fit
// for it: short header and read deadlines (requests are tiny), no write
// deadline because a switch streams for as long as its drain takes.
func (s *Server) NewHTTPServer() *http.Server {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(func() { s.doneOnce.Do(func() { close(s.done) }) })
	return srv
}

// CheckListenAddr refuses an admin address that is not loopback unless a
// token is set: an open admin port lets anyone reroute production traffic.
func CheckListenAddr(addr string, tokenSet bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", addr, err)
	}
	if tokenSet || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("admin address %q is not loopback and no token is set: set BATON_ADMIN_TOKEN or --admin-token-file, or listen on 127.0.0.1", addr)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// statusError is an error that carries the HTTP status it should be
// answered with, and fields to add to the JSON body beside "error".
type statusError struct {
	code   int
	err    error
	fields map[string]any
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func withStatus(code int, err error) error { return &statusError{code: code, err: err} }

// withFields is withStatus with fields added to the answer, e.g. the list
// of services beside an error about a service's name.
func withFields(code int, err error, fields map[string]any) error {
	return &statusError{code: code, err: err, fields: fields}
}

func (s *Server) authorize(r *http.Request) error {
	if s.cfg.Token == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil || !isLoopbackHost(host) {
			return withStatus(http.StatusForbidden, errors.New("admin API without a token accepts loopback clients only"))
		}
		return nil
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
		return withStatus(http.StatusUnauthorized, errors.New("missing or wrong bearer token"))
	}
	return nil
}

// handle adapts a handler that returns an error to an http.Handler; the
// error becomes a JSON body with the status it carries (500 otherwise).
func (s *Server) handle(fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			var se *statusError
			if !errors.As(err, &se) || se.code >= 500 {
				s.logger.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, err)
		}
	})
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	body := map[string]any{}
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
		for k, v := range se.fields {
			body[k] = v
		}
	}
	body["error"] = errorText(err)
	writeJSON(w, code, body)
}

// errorText is err's message for an answer or a stream's last line: a full
// disk says so (see diskFull), and switcher.ErrInvalid's own text ("invalid
// request: ") is left out, since the 400 status, or the step "failed", says
// it already, and for a port conflict on the idle colour it would blame the
// request for the state of the machine.
func errorText(err error) string {
	if full := diskFull(err); full != nil {
		err = full
	}
	msg := err.Error()
	if errors.Is(err, switcher.ErrInvalid) {
		msg = strings.Replace(msg, switcher.ErrInvalid.Error()+": ", "", 1)
	}
	return msg
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

var knownPaths = map[string]string{"/v1/status": "GET", "/v1/switch": "POST", "/v1/deploy": "POST", "/v1/rollback": "POST", "/v1/upgrade": "POST", "/metrics": "GET",
	"/v1/rollout": "POST", "/v1/rollout/percent": "POST", "/v1/rollout/promote": "POST", "/v1/rollout/abort": "POST",
	"/v1/services": "GET", "/v1/reload": "POST", "/v1/events": "GET", "/v1/probe": "GET, POST"}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	allow, ok := knownPaths[r.URL.Path]
	if op, isOp := serviceOp(r.URL.Path); isOp {
		allow, ok = serviceOps[op], true
	}
	if ok {
		w.Header().Set("Allow", allow)
		return withStatus(http.StatusMethodNotAllowed, fmt.Errorf("%s %s: method not allowed; use %s", r.Method, r.URL.Path, allow))
	}
	return withStatus(http.StatusNotFound, fmt.Errorf("no such endpoint %s; see GET /v1/services, GET /v1/services/{name}/status and POST /v1/services/{name}/switch", r.URL.Path))
}

// StatusResponse is the body of GET /v1/status and of GET
// /v1/services/{name}/status.
type StatusResponse struct {
	BatonVersion string `json:"baton_version"`
	// PID is the serving baton process; it changes with an upgrade.
	PID int `json:"pid"`
	// Service is the name of the service the status is of.
	Service string `json:"service"`
	// Warnings are what the checks of baton's settings found that did not
	// stop it, such as an SSH host out of reach at start.
	Warnings []string `json:"warnings,omitempty"`
	switcher.Status
}

func (s *Server) status(w http.ResponseWriter, r *http.Request, svc Service) error {
	resp := StatusResponse{BatonVersion: s.cfg.Version, PID: os.Getpid(), Service: svc.Name, Status: svc.Controller.Status()}
	if s.cfg.Warnings != nil {
		resp.Warnings = s.cfg.Warnings()
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// SwitchRequest is the body of POST /v1/switch. An empty body switches to
// the idle colour.
type SwitchRequest struct {
	To string `json:"to,omitempty"`
	// WatchRequest asks for a watch after the swap (see rollout.go).
	WatchRequest
}

// StreamLine is one NDJSON line of an operation's progress. The last line
// has Step "done" or "failed" and OK set.
type StreamLine struct {
	switcher.Event
	OK     *bool         `json:"ok,omitempty"`
	Result *SwitchResult `json:"result,omitempty"`
	Deploy *DeployResult `json:"deploy,omitempty"` // the last line of a deploy
}

// SwitchResult is the summary carried by the last line of a switch.
type SwitchResult struct {
	ID         string  `json:"id"`
	From       string  `json:"from"`
	To         string  `json:"to"`
	DurationMS float64 `json:"duration_ms"`
	Drained    int64   `json:"drained"`
	Abandoned  int64   `json:"abandoned"`
	Stopped    string  `json:"stopped,omitempty"`
	// Warnings lists what went wrong without failing the operation, e.g.
	// a state file that could not be saved after the swap.
	Warnings []string `json:"warnings,omitempty"`
}

func switchResult(res switcher.Result) SwitchResult {
	return SwitchResult{
		ID: res.ID, From: res.From.String(), To: res.To.String(),
		DurationMS: float64(res.Duration.Microseconds()) / 1000,
		Drained:    res.Drained, Abandoned: res.Abandoned, Stopped: res.Stopped, Warnings: res.Warnings,
	}
}

// operationError maps an error that ended an operation before its stream
// started to the HTTP status it is answered with.
func operationError(err error) error {
	if full := diskFull(err); full != nil {
		return full
	}
	switch {
	case errors.Is(err, switcher.ErrInvalid):
		return withStatus(http.StatusBadRequest, err)
	case errors.Is(err, switcher.ErrBusy), errors.Is(err, switcher.ErrAlreadyLive), errors.Is(err, switcher.ErrNothingToRollBack),
		errors.Is(err, switcher.ErrPortInUse):
		return withStatus(http.StatusConflict, err)
	}
	return err
}

// decodeBody decodes a small JSON body into v, strictly: unknown fields,
// trailing data and oversized bodies are errors. An empty body leaves v as is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBodyLimit(w, r, v, MaxBodyBytes)
}

// decodeBodyLimit is decodeBody for an endpoint that takes more than
// MaxBodyBytes (a probe's timeline plot).
func decodeBodyLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return withStatus(http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", mbe.Limit))
		}
		return withStatus(http.StatusBadRequest, fmt.Errorf("request body: %w", err))
	}
	return nil
}

func (s *Server) switchColor(w http.ResponseWriter, r *http.Request, svc Service) error {
	var body SwitchRequest
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	var req switcher.SwitchRequest
	var err error
	if req.Watch, err = body.WatchRequest.watch(); err != nil {
		return err
	}
	if body.To != "" {
		c, err := switcher.ParseColor(body.To)
		if err != nil {
			return withStatus(http.StatusBadRequest, err)
		}
		req.To = &c
	}
	st := newStream(w)
	res, err := svc.Controller.Switch(r.Context(), req, st.send)
	if err != nil && !st.started {
		return operationError(err)
	}
	ok := err == nil
	last := StreamLine{Event: switcher.Event{Time: time.Now().UTC(), Step: "done"}, OK: &ok}
	sr := switchResult(res)
	last.Result = &sr
	if err != nil {
		last.Step = "failed"
		last.Error = errorText(err)
		last.Message = "switch failed"
	} else {
		last.Message = fmt.Sprintf("switched to %s in %s", res.To, res.Duration.Round(time.Millisecond))
	}
	st.line(last)
	return nil
}

// stream writes NDJSON lines and flushes each, so the caller sees progress
// as it happens. The 200 status is written with the first line.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	enc     *json.Encoder
	started bool
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w)}
}

func (s *stream) send(e switcher.Event) { s.line(StreamLine{Event: e}) }

func (s *stream) line(l StreamLine) {
	if !s.started {
		s.w.Header().Set("Content-Type", "application/x-ndjson")
		s.w.Header().Set("X-Content-Type-Options", "nosniff")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	// A caller that went away does not stop the operation; its lines are
	// simply lost, and the outcome is in status and the logs.
	_ = s.enc.Encode(l)
	_ = s.rc.Flush()
}
