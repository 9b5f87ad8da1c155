package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"image/png"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/sampleapp"
	"github.com/batonproxy/baton/proxy"
)

// keepPlots, if set, is a directory where the tests leave their plots for a
// person to look at.
var keepPlots = os.Getenv("BATON_PROBE_PLOT_DIR")

func writePlots(t *testing.T, rep *Report, name string) {
	t.Helper()
	dir := keepPlots
	if dir == "" {
		dir = t.TempDir()
	}
	for _, ext := range []string{".svg", ".png"} {
		path := filepath.Join(dir, name+ext)
		if err := rep.WritePlotFile(path); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if ext == ".png" {
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if got := img.Bounds().Dx(); got != plotWidth {
				t.Errorf("%s: width %d; want %d", path, got, plotWidth)
			}
			continue
		}
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s is not well-formed XML: %v", path, err)
			}
		}
	}
}

// TestCleanSwitch probes through baton's proxy while it swaps from v1 to v2.
func TestCleanSwitch(t *testing.T) {
	v1 := httptest.NewServer(sampleapp.Handler("v1", ""))
	defer v1.Close()
	v2 := httptest.NewServer(sampleapp.Handler("v2", ""))
	defer v2.Close()
	h := proxy.NewHandler(proxy.Options{})
	blue, _ := proxy.NewUpstream("blue", v1.Listener.Addr().String())
	green, _ := proxy.NewUpstream("green", v2.Listener.Addr().String())
	h.Route(blue)
	srv := httptest.NewServer(h)
	defer srv.Close()

	p, err := Start(t.Context(), Config{URL: srv.URL + "/", Rate: 300, SlowFraction: 0.05, SlowMin: 20 * time.Millisecond,
		SlowMax: 200 * time.Millisecond, PostFraction: 0.1, CheckEcho: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	m := Mark{Start: time.Now(), Label: "switch blue→green"}
	time.Sleep(50 * time.Millisecond)
	m.At = time.Now()
	h.Route(green)
	if err := blue.WaitIdle(t.Context(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	m.End = time.Now()
	p.Mark(m)
	time.Sleep(400 * time.Millisecond)
	rep := p.Stop()
	if rep.Err != nil {
		t.Fatal(rep.Err)
	}
	t.Logf("\n%s", rep.Summary(0))

	if v := rep.Verdict(0); !v.Pass || v.Failures != 0 {
		t.Errorf("verdict %v; want a pass with no failures", v)
	}
	if got := rep.Versions(); len(got) != 2 || got[0] != "v1" || got[1] != "v2" {
		t.Errorf("versions %v; want [v1 v2]", got)
	}
	sum := rep.Summary(0)
	for _, want := range []string{"probe " + srv.URL, "version v2:", "switch blue→green: +", "swap at +", "verdict: PASS"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	js, err := json.Marshal(rep.JSON(0))
	if err != nil {
		t.Fatal(err)
	}
	var back JSONSummary
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Verdict.Pass || back.Requests != rep.Total() || len(back.Versions) != 2 || back.Versions[1].FirstMS <= 0 || len(back.Marks) != 1 {
		t.Errorf("JSON summary %s: want a pass, %d requests, 2 versions, v2 first after the start, 1 mark", js, rep.Total())
	}
	writePlots(t, rep, "clean")
}

// TestFailuresFailTheVerdict runs against an app that drops connections for
// a while: the probe must count every drop and fail the verdict.
func TestFailuresFailTheVerdict(t *testing.T) {
	var broken atomic.Bool
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App-Version", "v1")
		if broken.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		io.WriteString(w, "v1\n")
	}))
	app.Config.ErrorLog = log.New(io.Discard, "", 0)
	app.Start()
	defer app.Close()

	p, err := Start(t.Context(), Config{URL: app.URL + "/x?y=1", Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	broken.Store(true)
	time.Sleep(300 * time.Millisecond)
	broken.Store(false)
	time.Sleep(300 * time.Millisecond)
	rep := p.Stop()
	t.Logf("\n%s", rep.Summary(0))

	failed := len(rep.Failures())
	if failed < 20 {
		t.Fatalf("%d failures; want the ~60 requests sent while broken", failed)
	}
	if v := rep.Verdict(0); v.Pass || v.Failures != failed {
		t.Errorf("Verdict(0) = %+v; want a fail with %d failures", v, failed)
	}
	if v := rep.Verdict(failed); !v.Pass {
		t.Errorf("Verdict(%d) = %+v; want a pass", failed, v)
	}
	if gap := rep.LongestGap(); gap < 250*time.Millisecond {
		t.Errorf("longest gap %v; want about 300ms", gap)
	}
	from, to := rep.LongestGapWindow()
	if to.Sub(from) != rep.LongestGap() {
		t.Errorf("gap window %v; LongestGap %v: want equal", to.Sub(from), rep.LongestGap())
	}
	if !strings.Contains(rep.Summary(0), "verdict: FAIL") {
		t.Errorf("summary does not say FAIL:\n%s", rep.Summary(0))
	}
	var svg bytes.Buffer
	if err := rep.WritePlot(&svg, "svg"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg.String(), "NOT CLEAN") || !strings.Contains(svg.String(), failColor) {
		t.Errorf("plot does not show the failures")
	}
	writePlots(t, rep, "failures")
}

func TestHTTPSWithConnect(t *testing.T) {
	app := httptest.NewTLSServer(sampleapp.Handler("tls", ""))
	defer app.Close()
	roots := app.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	// The test certificate is for example.com; connect to the server's
	// address while asking for that name, as a probe of a real domain
	// through a local address does.
	rep, err := Run(t.Context(), Config{URL: "https://example.com/", Connect: app.Listener.Addr().String(), Rate: 100,
		TLS: &tls.Config{RootCAs: roots}}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if v := rep.Verdict(0); !v.Pass || rep.Versions()[0] != "tls" {
		t.Errorf("verdict %v, versions %v; want a pass answered by tls\n%s", v, rep.Versions(), rep.Summary(0))
	}
}

func TestVersionFromBody(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "build-42 says hello\n")
	}))
	defer app.Close()
	rep, err := Run(t.Context(), Config{URL: app.URL, Rate: 100, VersionFromBody: true}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if v := rep.Versions(); len(v) != 1 || v[0] != "build-42" {
		t.Errorf("versions %v; want [build-42]", v)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "want http://"},
		{"ftp://x/", "want http://"},
		{"http://user:secret@host/", "credentials"},
		{"http://host:99999999/", "port"},
	} {
		err := Config{URL: tc.url}.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%q) = %v; want an error about %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Validate(%q) = %v: the password is in the error", tc.url, err)
		}
	}
	if _, err := Run(context.Background(), Config{URL: "http://127.0.0.1:1/"}, 0); err == nil {
		t.Error("Run without a duration or a cancellable context: want an error")
	}
}
