package admin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/state"
	"github.com/batonproxy/baton/switcher"
)

// fakeDeployer records deploys and what the artifact file held when the
// deploy ran; the deploy logic itself is covered by package switcher.
type fakeDeployer struct {
	mu      sync.Mutex
	reqs    []switcher.DeployRequest
	content []string
	busy    atomic.Bool
	err     error // guarded by mu
}

func (f *fakeDeployer) Status() switcher.Status {
	st := switcher.Status{Live: "blue"}
	if f.busy.Load() {
		st.Operation = &switcher.Operation{ID: "x", Kind: "deploy", To: "green", Started: time.Now(), Step: "health"}
	}
	return st
}

func (f *fakeDeployer) Switch(context.Context, switcher.SwitchRequest, func(switcher.Event)) (switcher.Result, error) {
	return switcher.Result{}, nil
}

func (f *fakeDeployer) Deploy(ctx context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	b, _ := os.ReadFile(req.Artifact)
	f.content = append(f.content, string(b))
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return switcher.DeployResult{}, err
	}
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "deploy"})
	return switcher.DeployResult{Result: switcher.Result{ID: "d1", From: switcher.Blue, To: switcher.Green},
		Version: req.Version, Instance: state.Instance{PID: 42, Log: "/logs/x.log"}}, nil
}

func deployServer(t *testing.T, d *fakeDeployer, cfg DeployConfig) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Config{}, only(d, cfg)))
	t.Cleanup(srv.Close)
	return srv
}

func postDeploy(t *testing.T, url, contentType, body string) (int, []StreamLine, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []StreamLine
	var raw strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		raw.WriteString(sc.Text() + "\n")
		var l StreamLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return resp.StatusCode, lines, raw.String()
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestDeployUploadIsStreamedToDiskAndRemovedAfter(t *testing.T) {
	d := &fakeDeployer{}
	uploads := filepath.Join(t.TempDir(), "uploads")
	srv := deployServer(t, d, DeployConfig{UploadDir: uploads})
	code, lines, raw := postDeploy(t, srv.URL+"/v1/deploy?version=1.4.2&name=app.jar&sha256="+sum("the app"), "application/octet-stream", "the app")
	if code != 200 || len(lines) != 3 {
		t.Fatalf("status %d, body:\n%s", code, raw)
	}
	if lines[0].Step != "artifact" || !strings.Contains(lines[0].Message, sum("the app")) {
		t.Errorf("first line %+v; want the artifact note with its sha256", lines[0])
	}
	last := lines[2]
	if last.OK == nil || !*last.OK || last.Deploy == nil || last.Deploy.PID != 42 || last.Deploy.SHA256 != sum("the app") || last.Deploy.Version != "1.4.2" {
		t.Errorf("last line %+v", last)
	}
	if len(d.reqs) != 1 || filepath.Base(d.reqs[0].Artifact) != "app.jar" || d.content[0] != "the app" {
		t.Errorf("deploy saw %+v with content %q", d.reqs, d.content)
	}
	if entries, _ := os.ReadDir(uploads); len(entries) != 0 {
		t.Errorf("%d entries left in the upload dir", len(entries))
	}
}

func TestDeployByPathAndURL(t *testing.T) {
	d := &fakeDeployer{}
	srv := deployServer(t, d, DeployConfig{UploadDir: t.TempDir()})
	p := filepath.Join(t.TempDir(), "app.jar")
	os.WriteFile(p, []byte("from disk"), 0o600)
	if code, _, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v1","artifact":"`+p+`","sha256":"`+sum("from disk")+`"}`); code != 200 {
		t.Fatalf("deploy by path: %d\n%s", code, raw)
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/builds/app-v2.jar" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("downloaded"))
	}))
	defer files.Close()
	if code, _, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v2","artifact":"`+files.URL+`/builds/app-v2.jar"}`); code != 200 {
		t.Fatalf("deploy by URL: %d\n%s", code, raw)
	}
	if len(d.reqs) != 2 || d.reqs[0].Artifact != p || d.content[0] != "from disk" ||
		filepath.Base(d.reqs[1].Artifact) != "app-v2.jar" || d.content[1] != "downloaded" || d.reqs[1].SHA256 != sum("downloaded") {
		t.Errorf("deploys %+v, contents %q", d.reqs, d.content)
	}
	if code, _, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v3","artifact":"`+files.URL+`/missing.jar"}`); code != http.StatusBadGateway {
		t.Errorf("deploy of a missing URL: %d\n%s; want 502", code, raw)
	}
}

func TestDeployRefusals(t *testing.T) {
	d := &fakeDeployer{}
	srv := deployServer(t, d, DeployConfig{UploadDir: t.TempDir(), MaxArtifactBytes: 10})
	for _, tc := range []struct {
		name, query, ct, body string
		code                  int
		want                  string
	}{
		{"wrong sha256", "version=v1&name=a&sha256=" + sum("other"), "application/octet-stream", "abc", 400, "sha256"},
		{"too big", "version=v1&name=a", "application/octet-stream", strings.Repeat("x", 11), 413, "limit"},
		{"bad name", "version=v1&name=../a", "application/octet-stream", "abc", 400, "name"},
		{"bad version", "version=1;rm&name=a", "application/octet-stream", "abc", 400, "version"},
		{"relative path", "", "application/json", `{"version":"v1","artifact":"app.jar"}`, 400, "absolute"},
		{"no version", "", "application/json", `{"artifact":"/x"}`, 400, "version"},
		{"other type", "", "application/xml", "<hi/>", 415, "Content-Type"},
	} {
		code, _, raw := postDeploy(t, srv.URL+"/v1/deploy?"+tc.query, tc.ct, tc.body)
		if code != tc.code || !strings.Contains(raw, tc.want) {
			t.Errorf("%s: %d %s; want %d mentioning %q", tc.name, code, raw, tc.code, tc.want)
		}
	}
	if len(d.reqs) != 0 {
		t.Errorf("refused requests reached the deployer: %+v", d.reqs)
	}

	d.busy.Store(true)
	if code, _, raw := postDeploy(t, srv.URL+"/v1/deploy?version=v1&name=a", "application/octet-stream", "abc"); code != 409 || !strings.Contains(raw, "deploy to green") {
		t.Errorf("deploy while busy: %d %s; want 409", code, raw)
	}
	d.busy.Store(false)
	d.mu.Lock()
	d.err = fmt.Errorf("%w: %w", switcher.ErrInvalid, switcher.ErrNoLauncher)
	d.mu.Unlock()
	if code, _, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v1"}`); code != 400 || !strings.Contains(raw, "no launcher") {
		t.Errorf("deploy without a launcher: %d %s; want 400", code, raw)
	}
}

// Issue 13, item 18: a port conflict on the idle colour read "invalid
// request: green (…) is already in use …", as if the request were at
// fault. The sentinel's text is not shown: the HTTP status (400 before the
// stream) or the failed last line already says it.
func TestErrorsDoNotSayInvalidRequest(t *testing.T) {
	conflict := fmt.Errorf("deploy v2 to green: %w: green (127.0.0.1:8081) is already in use by a process baton did not start; stop it; blue keeps serving", switcher.ErrInvalid)
	d := &midStreamDeployer{err: conflict}
	srv := httptest.NewServer(New(Config{}, only(d, DeployConfig{})))
	t.Cleanup(srv.Close)
	code, lines, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v2"}`)
	if code != 200 || len(lines) == 0 {
		t.Fatalf("deploy: %d\n%s", code, raw)
	}
	last := lines[len(lines)-1]
	if last.Step != "failed" || strings.Contains(last.Error, "invalid request") || !strings.Contains(last.Error, "green (127.0.0.1:8081) is already in use") {
		t.Errorf("last line error %q; want the conflict without \"invalid request\"", last.Error)
	}

	// Before the stream: a 400 whose reason does not repeat it either.
	d.early = true
	code, _, raw = postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v2"}`)
	if code != 400 || strings.Contains(raw, "invalid request") || !strings.Contains(raw, "already in use") {
		t.Errorf("early conflict: %d %s; want 400 without \"invalid request\"", code, raw)
	}
}

// midStreamDeployer fails a deploy with err, after its first event unless
// early is set.
type midStreamDeployer struct {
	fakeDeployer
	err   error
	early bool
}

func (m *midStreamDeployer) Deploy(ctx context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	if !m.early {
		emit(switcher.Event{Time: time.Now(), Step: "start", Message: "deploy"})
	}
	return switcher.DeployResult{Version: req.Version}, m.err
}
