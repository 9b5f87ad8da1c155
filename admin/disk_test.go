package admin

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/batonproxy/baton/switcher"
)

// diskFullServer is a deploy server whose uploads and downloads are written
// to /dev/full: every write fails with the kernel's own ENOSPC.
func diskFullServer(t *testing.T, d *fakeDeployer, uploads string) *httptest.Server {
	t.Helper()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatalf("this test writes to /dev/full: %v", err)
	}
	s := New(Config{}, only(d, DeployConfig{UploadDir: uploads}))
	s.createFile = func(string) (*os.File, error) { return os.OpenFile("/dev/full", os.O_WRONLY, 0) }
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// Issue 13, item 10: a full disk was answered "400 ... upload broke off
// ... no space left on device", as if the client were at fault. It is a
// 507 that says baton's disk is full and that nothing changed.
func TestFullDiskIs507(t *testing.T) {
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("jar", 1000))
	}))
	t.Cleanup(files.Close)
	d := &fakeDeployer{}
	uploads := filepath.Join(t.TempDir(), "uploads")
	srv := diskFullServer(t, d, uploads)
	for _, tc := range []struct{ name, query, ct, body string }{
		{"upload", "?version=v2&name=app.jar", "application/octet-stream", strings.Repeat("jar", 1000)},
		{"download", "", "application/json", `{"version":"v2","artifact":"` + files.URL + `/app.jar"}`},
	} {
		code, _, raw := postDeploy(t, srv.URL+"/v1/deploy"+tc.query, tc.ct, tc.body)
		if code != http.StatusInsufficientStorage {
			t.Errorf("%s on a full disk: %d %s; want 507", tc.name, code, raw)
			continue
		}
		msg := errorOf(t, raw)
		for _, want := range []string{"baton's disk is full", "no space left on device", "nothing was changed"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s on a full disk: error %q; want it to say %q", tc.name, msg, want)
			}
		}
	}
	if len(d.reqs) != 0 {
		t.Errorf("deploys ran on a full disk: %+v", d.reqs)
	}
	if left, _ := os.ReadDir(uploads); len(left) != 0 {
		t.Errorf("uploads left behind: %v", left)
	}

	// The switcher's own "cannot save state" on a full disk is a 507 too.
	d.mu.Lock()
	d.err = fmt.Errorf("deploy v2 to green: %w: write state.json: %w; nothing was changed", switcher.ErrState, syscall.ENOSPC)
	d.mu.Unlock()
	code, _, raw := postDeploy(t, srv.URL+"/v1/deploy", "application/json", `{"version":"v2"}`)
	if code != http.StatusInsufficientStorage || !strings.Contains(raw, "baton's disk is full") || !strings.Contains(raw, "nothing was changed") {
		t.Errorf("state save on a full disk: %d %s; want 507 saying baton's disk is full", code, raw)
	}
}
