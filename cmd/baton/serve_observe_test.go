package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batonproxy/baton/internal/sampleapp"
	"github.com/batonproxy/baton/internal/syncbuf"
)

// TestServeObservability runs 'baton serve' with the access log, debug logs
// and a --metrics listener, sends traffic and a switch carrying the admin
// token everywhere a careless log line could pick it up, then checks that
// the token is in no log line and that the metrics count what was sent.
func TestServeObservability(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) { testServeObservability(t, format) })
	}
}

func testServeObservability(t *testing.T, format string) {
	const token = "tok-5e3b1f9c-must-never-be-logged"
	t.Setenv("BATON_ADMIN_TOKEN", token)
	t.Setenv("BATON_ADMIN_TOKEN_FILE", "")
	blue := httptest.NewServer(sampleapp.Handler("v1", ""))
	defer blue.Close()
	green := httptest.NewServer(sampleapp.Handler("v2", ""))
	defer green.Close()
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	public, adminURL, metricsAddr := "127.0.0.1:"+strconv.Itoa(ports[0]), "http://127.0.0.1:"+strconv.Itoa(ports[1]), "127.0.0.1:"+strconv.Itoa(ports[2])

	// serve runs in a child process (this test binary, see
	// TestServeHelperProcess): it installs process-wide state, such as the
	// upgrader, that only one serve per process may hold.
	args, _ := json.Marshal([]string{"serve",
		"--http", public, "--admin", strings.TrimPrefix(adminURL, "http://"),
		"--blue", blue.Listener.Addr().String(), "--green", green.Listener.Addr().String(),
		"--state-dir", t.TempDir(), "--no-stop", // the apps are in this process: never signal it
		"--health-interval", "10ms", "--metrics", metricsAddr, "--access-log",
		"--log-format", format, "--log-level", "debug"})
	var logs syncbuf.Buffer
	child := exec.Command(os.Args[0], "-test.run=^TestServeHelperProcess$")
	child.Env = append(os.Environ(), "BATON_TEST_SERVE_ARGS="+string(args))
	child.Stdout, child.Stderr = io.Discard, &logs
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exit := make(chan error, 1)
	go func() { exit <- child.Wait() }()
	defer func() {
		if child.ProcessState == nil {
			child.Process.Kill()
			<-exit
		}
	}()
	ctx := t.Context()

	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, url, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		req.Header.Set("Cookie", "session="+token)
		if method == "POST" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", adminURL+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton serve did not come up; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Public traffic with the token in the query, the Authorization header
	// and a cookie: none of it belongs in an access log.
	sent := 0
	for _, path := range []string{"/?token=" + token, "/" + "fail?key=" + token, "/health"} {
		do("GET", "http://"+public+path, token)
		sent++
	}
	// Admin calls with wrong and right tokens, a switch, and the CLI.
	if code, _ := do("GET", adminURL+"/v1/status", "wrong-"+token); code != http.StatusUnauthorized {
		t.Errorf("status with a wrong token: %d; want 401", code)
	}
	if code, _ := do("GET", adminURL+"/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("admin /metrics without a token: %d; want 401", code)
	}
	if code, body := do("POST", adminURL+"/v1/switch", token); code != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Fatalf("switch: %d %s", code, body)
	}
	for range 2 {
		do("GET", "http://"+public+"/", "")
		sent++
	}
	var cliOut syncbuf.Buffer
	if code := run(ctx, []string{"status", "--admin", adminURL}, &cliOut, &cliOut); code != exitOK {
		t.Errorf("baton status: exit %d: %s", code, cliOut.String())
	}
	if code := run(ctx, []string{"switch", "--admin", "http://127.0.0.1:1"}, &cliOut, &cliOut); code != exitFailure {
		t.Errorf("baton switch to a dead admin API: exit %d; want %d", code, exitFailure)
	}

	// The --metrics listener serves without auth and counts what was sent.
	code, page := do("GET", "http://"+metricsAddr+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET --metrics /metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	var requests, switchesOK float64
	for _, m := range mfs["baton_http_requests_total"].GetMetric() {
		requests += m.GetCounter().GetValue()
	}
	for _, m := range mfs["baton_switches_total"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "ok" {
			switchesOK = m.GetCounter().GetValue()
		}
	}
	if requests != float64(sent) || switchesOK != 1 {
		t.Errorf("metrics: %v requests, %v ok switches; want %d and 1", requests, switchesOK, sent)
	}

	if err := child.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exit:
		if err != nil {
			t.Errorf("baton serve: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("baton serve did not stop on SIGINT")
	}

	out := logs.String() + cliOut.String()
	if strings.Contains(out, token) {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, token) {
				t.Errorf("the admin token is logged: %s", line)
			}
		}
	}
	accessLines := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"access"`) || strings.Contains(line, "msg=access") {
			accessLines++
		}
	}
	if accessLines != sent {
		t.Errorf("%d access-log lines; want one per public request (%d):\n%s", accessLines, sent, logs.String())
	}
	for _, want := range []string{"serving metrics", "switch swap", "switch drain", "/fail"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if t.Failed() {
		fmt.Println(logs.String())
	}
}

// TestServeHelperProcess is 'baton serve' in a child process for
// TestServeObservability; run on its own it does nothing.
func TestServeHelperProcess(t *testing.T) {
	raw := os.Getenv("BATON_TEST_SERVE_ARGS")
	if raw == "" {
		t.Skip("helper process for TestServeObservability")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func TestMetricsFlagValidation(t *testing.T) {
	_, err := newObservability(observeConfig{MetricsAddr: "nonsense"}, slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("--metrics nonsense: %v; want a usage error naming --metrics", err)
	}
	if _, err := newObservability(observeConfig{MetricsAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("--metrics 127.0.0.1:0: %v", err)
	}
}
