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
	// Deploy configures POST /v1/deploy, served when the Controller is
	// also a Deployer.
	Deploy DeployConfig
	// Upgrade, if set, serves POST /v1/upgrade: replace this baton with a
	// new binary without closing its sockets.
	Upgrade Upgrader
	// Warnings, if set, returns what the checks of baton's settings found
	// that did not stop it (an SSH host out of reach), for status.
	Warnings func() []string
}

// Server is the admin API. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg    Config
	ctl    Controller
	mux    *http.ServeMux
	logger *slog.Logger
}

// New returns a Server for ctl.
func New(cfg Config, ctl Controller) *Server {
	s := &Server{cfg: cfg, ctl: ctl, mux: http.NewServeMux(), logger: cfg.Logger}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.mux.Handle("GET /v1/status", s.handle(s.status))
	s.mux.Handle("POST /v1/switch", s.handle(s.switchColor))
	if d, ok := ctl.(Deployer); ok {
		s.mux.Handle("POST /v1/deploy", s.handle(s.deploy(d)))
	}
	if rb, ok := ctl.(Rollbacker); ok {
		s.mux.Handle("POST /v1/rollback", s.handle(s.rollback(rb)))
	}
	if rl, ok := ctl.(Roller); ok {
		s.mux.Handle("POST /v1/rollout", s.handle(s.rollout(rl)))
		s.mux.Handle("POST /v1/rollout/{action}", s.handle(s.steer(rl)))
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

// ServeHTTP authenticates r and routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.authorize(r); err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="baton"`)
		writeError(w, err)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// NewHTTPServer returns an http.Server for the admin API with timeouts fit
// for it: short header and read deadlines (requests are tiny), no write
// deadline because a switch streams for as long as its drain takes.
func (s *Server) NewHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
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
// answered with.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func withStatus(code int, err error) error { return &statusError{code: code, err: err} }

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
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
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
	"/v1/rollout": "POST", "/v1/rollout/percent": "POST", "/v1/rollout/promote": "POST", "/v1/rollout/abort": "POST"}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	if allow, ok := knownPaths[r.URL.Path]; ok {
		w.Header().Set("Allow", allow)
		return withStatus(http.StatusMethodNotAllowed, fmt.Errorf("%s %s: method not allowed; use %s", r.Method, r.URL.Path, allow))
	}
	return withStatus(http.StatusNotFound, fmt.Errorf("no such endpoint %s; see GET /v1/status and POST /v1/switch", r.URL.Path))
}

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	BatonVersion string `json:"baton_version"`
	// PID is the serving baton process; it changes with an upgrade.
	PID int `json:"pid"`
	// Warnings are what the checks of baton's settings found that did not
	// stop it, such as an SSH host out of reach at start.
	Warnings []string `json:"warnings,omitempty"`
	switcher.Status
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	resp := StatusResponse{BatonVersion: s.cfg.Version, PID: os.Getpid(), Status: s.ctl.Status()}
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
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
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

func (s *Server) switchColor(w http.ResponseWriter, r *http.Request) error {
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
	res, err := s.ctl.Switch(r.Context(), req, st.send)
	if err != nil && !st.started {
		return operationError(err)
	}
	ok := err == nil
	last := StreamLine{Event: switcher.Event{Time: time.Now().UTC(), Step: "done"}, OK: &ok}
	sr := switchResult(res)
	last.Result = &sr
	if err != nil {
		last.Step = "failed"
		last.Error = err.Error()
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
