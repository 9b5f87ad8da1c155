package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/switcher"
)

// countingListener counts every byte the server reads from its connections.
type countingListener struct {
	net.Listener
	read *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.read}, nil
}

type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// Close first reads and counts what the client still sends: an HTTP server
// closes a connection whose body it did not want without reading it, but the
// client may be sending it all the same, and that is the cost measured here.
// Our FIN makes the client close its end once it has the answer, which ends
// the read (the deadline only bounds a client that never does).
func (c countingConn) Close() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	c.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.Copy(io.Discard, c.Conn)
	c.read.Add(n)
	return c.Conn.Close()
}

// deployTarget is the switcher as far as an upload sees it: busy or not,
// and counting the deploys that reach it.
type deployTarget struct {
	busy    atomic.Bool
	deploys atomic.Int64
}

func (d *deployTarget) Status() switcher.Status {
	st := switcher.Status{Live: "blue"}
	if d.busy.Load() {
		st.Operation = &switcher.Operation{ID: "d0", Kind: "deploy", To: "green", Started: time.Now(), Step: "health"}
	}
	return st
}

func (d *deployTarget) Switch(context.Context, switcher.SwitchRequest, func(switcher.Event)) (switcher.Result, error) {
	return switcher.Result{}, nil
}

func (d *deployTarget) Deploy(_ context.Context, req switcher.DeployRequest, emit func(switcher.Event)) (switcher.DeployResult, error) {
	d.deploys.Add(1)
	emit(switcher.Event{Time: time.Now(), Step: "start", Message: "deploy " + req.Version})
	return switcher.DeployResult{Result: switcher.Result{From: switcher.Blue, To: switcher.Green}, Version: req.Version}, nil
}

// Issue 13, item 15: the CLI uploaded the whole artifact before it learnt
// that the answer was 401 or 409. It now asks first (Expect:
// 100-continue), so a refused deploy sends none of the artifact's bytes.
func TestRefusedDeploySendsNoArtifactBytes(t *testing.T) {
	const size = 4 << 20
	art := filepath.Join(t.TempDir(), "app.jar")
	if err := os.WriteFile(art, bytes.Repeat([]byte("Z"), size), 0o600); err != nil {
		t.Fatal(err)
	}
	target := &deployTarget{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	srv := admin.New(admin.Config{Token: "s3cret"}, admin.One(admin.Service{Name: "default", Controller: target, Deploy: admin.DeployConfig{UploadDir: t.TempDir()}})).NewHTTPServer()
	go srv.Serve(countingListener{ln, &read})
	t.Cleanup(func() { srv.Close() })
	t.Setenv("BATON_ADMIN", "http://"+ln.Addr().String())
	t.Setenv("BATON_ADMIN_TOKEN_FILE", "")

	deploy := func() (int, string) {
		var out bytes.Buffer
		code := run(context.Background(), []string{"deploy", "--artifact", art, "--version", "v2"}, &out, &out)
		return code, out.String()
	}
	for _, tc := range []struct {
		name, token string
		busy        bool
		want        string
	}{
		{"wrong token", "wrong", false, "401"},
		{"another deploy runs", "s3cret", true, "409"},
	} {
		t.Setenv("BATON_ADMIN_TOKEN", tc.token)
		target.busy.Store(tc.busy)
		read.Store(0)
		code, out := deploy()
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d\n%s\nwant 1 with %s", tc.name, code, out, tc.want)
		}
		// The request head is a few hundred bytes; the artifact is
		// 4 MiB of "Z".
		if n := read.Load(); n > 2048 {
			t.Errorf("%s: the server read %d bytes; want the request head only, no artifact bytes", tc.name, n)
		}
	}
	if n := target.deploys.Load(); n != 0 {
		t.Fatalf("refused deploys reached the switcher: %d", n)
	}

	// The counting is real: an accepted deploy reads the whole artifact.
	t.Setenv("BATON_ADMIN_TOKEN", "s3cret")
	target.busy.Store(false)
	read.Store(0)
	if code, out := deploy(); code != 0 {
		t.Fatalf("accepted deploy: exit %d\n%s", code, out)
	}
	if n := read.Load(); n < size {
		t.Errorf("accepted deploy: the server read %d bytes; want at least the artifact's %d", n, size)
	}
}
