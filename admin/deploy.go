package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/switcher"
)

// DefaultMaxArtifactBytes bounds an uploaded or downloaded artifact when
// DeployConfig.MaxArtifactBytes is zero.
const DefaultMaxArtifactBytes = 1 << 30

// DeployConfig configures the deploys and rollouts of one service.
type DeployConfig struct {
	// UploadDir is where uploaded and downloaded artifacts are kept while
	// their deploy runs; each is removed when its deploy ends (the launcher
	// has installed its own copy by then). Empty means uploads and URLs are
	// refused and only paths on baton's machine are accepted.
	UploadDir string
	// MaxArtifactBytes bounds an uploaded or downloaded artifact; zero
	// means DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// Client downloads artifacts given as URLs; nil means a client with a
	// 10-minute timeout.
	Client *http.Client
}

// Deployer is what POST /v1/deploy needs of the switcher. The endpoint
// is served for a service whose Controller implements it.
type Deployer interface {
	Deploy(ctx context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error)
}

// DeployRequest is the JSON body of POST /v1/deploy. To upload the artifact
// instead, send it as the body with Content-Type application/octet-stream
// and the fields as query parameters: ?version=V&name=FILE[&sha256=HEX].
type DeployRequest struct {
	Version string `json:"version"`
	// Artifact is an absolute path on baton's machine, or an http(s) URL
	// that baton downloads. Empty if the launch command needs none.
	Artifact string `json:"artifact,omitempty"`
	// SHA256, if set, must match the artifact's checksum.
	SHA256 string `json:"sha256,omitempty"`
	// WatchRequest asks for a watch after the swap (see rollout.go).
	WatchRequest
}

// DeployResult is the summary carried by the last line of a deploy.
type DeployResult struct {
	SwitchResult
	Version  string `json:"version"`
	Artifact string `json:"artifact,omitempty"` // where the instance runs it from
	SHA256   string `json:"sha256,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Host     string `json:"host,omitempty"`
	Log      string `json:"log,omitempty"`
	// LogTail holds the last lines of the new instance's log when the
	// deploy failed after starting it.
	LogTail string `json:"log_tail,omitempty"`
}

var artifactNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// artifact is a deploy's artifact as the daemon has it.
type artifact struct {
	path, sum string
	note      string // how it arrived, for the first event
	cleanup   func()
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request, svc Service) error {
	d, ok := svc.Controller.(Deployer)
	if !ok {
		return unsupported(r, svc, "deploys")
	}
	req, upload, err := s.parseDeploy(w, r, svc.Deploy)
	if err != nil {
		return err
	}
	if err := switcher.CheckVersion(req.Version); err != nil {
		return withStatus(http.StatusBadRequest, err)
	}
	watch, err := req.WatchRequest.watch()
	if err != nil {
		return err
	}
	art, err := s.takeArtifact(w, r, svc, upload, req.Artifact, req.SHA256)
	if err != nil {
		return err
	}
	defer art.cleanup()

	st := newStream(w)
	res, err := d.Deploy(r.Context(), switcher.DeployRequest{Version: req.Version, Artifact: art.path, SHA256: art.sum, Watch: watch}, art.emitter(st))
	if err != nil && !st.started {
		return operationError(err)
	}
	st.line(deployLine(res, art.sum, err, fmt.Sprintf("deployed %s to %s in %s", res.Version, res.To, res.Duration.Round(time.Millisecond))))
	return nil
}

// takeArtifact gets the artifact a deploy or rollout of svc names: the
// request body if upload (name is then the file's name), a URL to
// download, or a path on baton's machine; none if name is empty. If want
// is set, the artifact's sha256 must match it. The caller calls the
// result's cleanup.
func (s *Server) takeArtifact(w http.ResponseWriter, r *http.Request, svc Service, upload bool, name, want string) (artifact, error) {
	// Refuse before reading a large upload that could not be deployed.
	// Only svc's own operation counts: other services deploy meanwhile.
	if op := svc.Controller.Status().Operation; op != nil {
		return artifact{}, withStatus(http.StatusConflict, fmt.Errorf("%w: %s to %s started %s ago (step %s)", switcher.ErrBusy,
			op.Kind, op.To, time.Since(op.Started).Round(time.Millisecond), op.Step))
	}
	dc := svc.Deploy
	var (
		art artifact
		err error
	)
	switch {
	case upload:
		art, err = s.receive(w, r, dc, name)
	case strings.HasPrefix(name, "http://"), strings.HasPrefix(name, "https://"):
		art, err = s.download(r.Context(), dc, name)
	case name != "":
		art, err = localArtifact(name)
	default:
		art = artifact{cleanup: func() {}}
	}
	if err != nil {
		return artifact{}, err
	}
	if want != "" && !strings.EqualFold(want, art.sum) {
		art.cleanup()
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact sha256 is %s; the request says %s", art.sum, want))
	}
	return art, nil
}

// emitter returns an emit function for an operation on a: it sends each
// event to st, the first one preceded by a's note. The note goes out with
// the operation's first event, so that an operation refused at once still
// gets its 4xx status.
func (a *artifact) emitter(st *stream) func(switcher.Event) {
	return func(e switcher.Event) {
		if a.note != "" {
			st.send(switcher.Event{Time: time.Now().UTC(), Step: "artifact", Message: a.note})
			a.note = ""
		}
		st.send(e)
	}
}

// uploadName checks the file name of an upload, "artifact" if name is
// empty, and that dc takes uploads. It returns the name to use.
func uploadName(dc DeployConfig, name string) (string, error) {
	if name == "" {
		name = "artifact"
	}
	if !artifactNameRE.MatchString(name) {
		return name, withStatus(http.StatusBadRequest, fmt.Errorf("name %q: want a plain file name (letters, digits, . _ + -)", name))
	}
	if dc.UploadDir == "" {
		return name, withStatus(http.StatusBadRequest, errors.New("this baton takes no uploads; give a path or URL"))
	}
	return name, nil
}

// deployLine is the last NDJSON line of a deploy, rollout or rollback:
// done with okMsg, or failed with err.
func deployLine(res switcher.DeployResult, sum string, err error, okMsg string) StreamLine {
	ok := err == nil
	last := StreamLine{Event: switcher.Event{Time: time.Now().UTC(), Step: "done", Message: okMsg}, OK: &ok}
	last.Deploy = &DeployResult{
		SwitchResult: switchResult(res.Result),
		Version:      res.Version, Artifact: res.Instance.Artifact, SHA256: sum,
		PID: res.Instance.PID, Host: res.Instance.Host, Log: res.Instance.Log, LogTail: res.LogTail,
	}
	if err != nil {
		last.Step = "failed"
		last.Error = errorText(err)
		last.Message = "deploy failed"
	}
	return last
}

// parseDeploy reads the request's fields: from the query for an upload
// (upload is true; Artifact is then the file's name), else from the JSON body.
func (s *Server) parseDeploy(w http.ResponseWriter, r *http.Request, dc DeployConfig) (req DeployRequest, upload bool, err error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/octet-stream":
		q := r.URL.Query()
		req = DeployRequest{Version: q.Get("version"), Artifact: q.Get("name"), SHA256: q.Get("sha256")}
		if req.WatchRequest, err = watchFromQuery(q); err != nil {
			return req, true, err
		}
		req.Artifact, err = uploadName(dc, req.Artifact)
		return req, true, err
	case "application/json":
		if err := decodeBody(w, r, &req); err != nil {
			return req, false, err
		}
		if req.Version == "" {
			return req, false, withStatus(http.StatusBadRequest, errors.New(`the body needs "version"`))
		}
		return req, false, nil
	}
	return req, false, withStatus(http.StatusUnsupportedMediaType,
		fmt.Errorf("Content-Type %q: send JSON, or the artifact itself as application/octet-stream", ct))
}

func maxArtifact(dc DeployConfig) int64 {
	if dc.MaxArtifactBytes > 0 {
		return dc.MaxArtifactBytes
	}
	return DefaultMaxArtifactBytes
}

// receive streams the request body to a file named name in a directory of
// its own under dc's UploadDir, hashing it on the way.
func (s *Server) receive(w http.ResponseWriter, r *http.Request, dc DeployConfig, name string) (artifact, error) {
	limit := maxArtifact(dc)
	if r.ContentLength > limit {
		return artifact{}, withStatus(http.StatusRequestEntityTooLarge, fmt.Errorf("artifact of %d bytes is over the limit of %d (--max-artifact-size)", r.ContentLength, limit))
	}
	// An upload may take longer than the admin server's read timeout,
	// which is sized for small JSON requests; the size limit bounds it.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	t := time.Now()
	art, n, err := s.store(dc, name, http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return artifact{}, withStatus(http.StatusRequestEntityTooLarge, fmt.Errorf("artifact is over the limit of %d bytes (--max-artifact-size)", limit))
	case err != nil:
		err = fmt.Errorf("upload of %s broke off after %d bytes: %w", name, n, err)
		if full := diskFull(err); full != nil {
			return artifact{}, full
		}
		return artifact{}, withStatus(http.StatusBadRequest, err)
	case r.ContentLength >= 0 && n != r.ContentLength:
		art.cleanup()
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("upload of %s: got %d of %d bytes", name, n, r.ContentLength))
	}
	art.note = fmt.Sprintf("received %s: %d bytes in %s, sha256 %s", name, n, time.Since(t).Round(time.Millisecond), art.sum)
	return art, nil
}

// download fetches an artifact URL into dc's UploadDir.
func (s *Server) download(ctx context.Context, dc DeployConfig, rawURL string) (artifact, error) {
	if dc.UploadDir == "" {
		return artifact{}, withStatus(http.StatusBadRequest, errors.New("this baton downloads no artifacts; give a path"))
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact URL: %w", err))
	}
	name := path.Base(u.Path)
	if !artifactNameRE.MatchString(name) {
		name = "artifact"
	}
	client := dc.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Minute}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact URL: %w", err))
	}
	t := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return artifact{}, withStatus(http.StatusBadGateway, fmt.Errorf("download %s: %w", u.Redacted(), err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return artifact{}, withStatus(http.StatusBadGateway, fmt.Errorf("download %s: %s", u.Redacted(), resp.Status))
	}
	limit := maxArtifact(dc)
	art, n, err := s.store(dc, name, io.LimitReader(resp.Body, limit+1))
	switch {
	case err != nil:
		err = fmt.Errorf("download %s broke off after %d bytes: %w", u.Redacted(), n, err)
		if full := diskFull(err); full != nil {
			return artifact{}, full
		}
		return artifact{}, withStatus(http.StatusBadGateway, err)
	case n > limit:
		art.cleanup()
		return artifact{}, withStatus(http.StatusRequestEntityTooLarge, fmt.Errorf("download %s: over the limit of %d bytes (--max-artifact-size)", u.Redacted(), limit))
	}
	art.note = fmt.Sprintf("downloaded %s: %d bytes in %s, sha256 %s", u.Redacted(), n, time.Since(t).Round(time.Millisecond), art.sum)
	return art, nil
}

// diskFull returns err as a 507 saying that baton's disk is full, if that
// is why err happened, else nil: a full disk is baton's problem, not the
// client's, and the operator must know nothing was changed.
func diskFull(err error) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return nil
	}
	return withStatus(http.StatusInsufficientStorage, &diskFullError{err})
}

// diskFullError is an error caused by a full disk, worded for the operator.
type diskFullError struct{ err error }

func (e *diskFullError) Error() string {
	msg := "baton's disk is full: " + e.err.Error()
	if !strings.Contains(msg, "nothing was changed") {
		msg += "; nothing was changed"
	}
	return msg
}

func (e *diskFullError) Unwrap() error { return e.err }

// store writes r to dc's UploadDir/upload-*/name and returns it with its
// sha256. On error nothing is left behind.
func (s *Server) store(dc DeployConfig, name string, r io.Reader) (artifact, int64, error) {
	if err := os.MkdirAll(dc.UploadDir, 0o700); err != nil {
		return artifact{}, 0, err
	}
	dir, err := os.MkdirTemp(dc.UploadDir, "upload-")
	if err != nil {
		return artifact{}, 0, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	p := filepath.Join(dir, name)
	f, err := s.createFile(p)
	if err != nil {
		cleanup()
		return artifact{}, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return artifact{}, n, err
	}
	return artifact{path: p, sum: hexSum(h), cleanup: cleanup}, n, nil
}

// localArtifact checks a path on baton's machine and hashes the file.
func localArtifact(p string) (artifact, error) {
	if !filepath.IsAbs(p) {
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact path %q: want an absolute path on baton's machine, or upload the file", p))
	}
	f, err := os.Open(p)
	if err != nil {
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact: %w", err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return artifact{}, withStatus(http.StatusBadRequest, fmt.Errorf("artifact %s is not a regular file", p))
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return artifact{}, fmt.Errorf("read artifact %s: %w", p, err)
	}
	return artifact{path: p, sum: hexSum(h), cleanup: func() {},
		note: fmt.Sprintf("using %s: %d bytes, sha256 %s", p, n, hexSum(h))}, nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

// Rollbacker is what POST /v1/rollback needs of the switcher. The
// endpoint is served for a service whose Controller implements it.
type Rollbacker interface {
	Rollback(ctx context.Context, emit func(switcher.Event)) (switcher.DeployResult, error)
}

// rollbackRequest is the body of POST /v1/rollback; it has no fields yet,
// but unknown ones are refused like everywhere else.
type rollbackRequest struct{}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, svc Service) error {
	rb, ok := svc.Controller.(Rollbacker)
	if !ok {
		return unsupported(r, svc, "rollbacks")
	}
	var body rollbackRequest
	if err := decodeBody(w, r, &body); err != nil {
		return err
	}
	st := newStream(w)
	res, err := rb.Rollback(r.Context(), st.send)
	if err != nil && !st.started {
		return operationError(err)
	}
	what := res.To.String()
	if res.Version != "" {
		what = res.Version + " on " + what
	}
	last := deployLine(res, "", err, fmt.Sprintf("rolled back to %s in %s", what, res.Duration.Round(time.Millisecond)))
	if err != nil {
		last.Message = "rollback failed"
	}
	st.line(last)
	return nil
}
