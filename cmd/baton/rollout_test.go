package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/admin"
	"github.com/batonproxy/baton/switcher"
)

func TestRolloutFlagMisuse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rollout", "--help"}, exitOK, "--promote"},
		{[]string{"deploy", "--help"}, exitOK, "--canary-header"},
		{[]string{"switch", "--help"}, exitOK, "--watch"},
		{[]string{"rollout", "--percent", "101"}, exitUsage, "want 0-100"},
		{[]string{"rollout", "--promote", "--abort"}, exitUsage, "one of"},
		{[]string{"deploy", "--version", "v2", "--sticky"}, exitUsage, "--sticky needs --canary or --steps"},
		{[]string{"deploy", "--version", "v2", "--canary", "10", "--steps", "20,50", "--step-interval", "1m"}, exitUsage, "disagree"},
		{[]string{"deploy", "--version", "v2", "--steps", "10,50"}, exitUsage, "needs --step-interval"},
		{[]string{"deploy", "--version", "v2", "--steps", "10,x"}, exitUsage, "--steps"},
		{[]string{"deploy", "--version", "v2", "--canary", "10", "--canary-header", "X-Canary"}, exitUsage, "Name: value"},
		{[]string{"deploy", "--version", "v2", "--max-error-rate", "150%"}, exitUsage, "--max-error-rate"},
		{[]string{"switch", "--watch", "-1m"}, exitUsage, "--watch"},
	} {
		var out bytes.Buffer
		code := run(context.Background(), tc.args, &out, &out)
		if code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("baton %v: exit %d, output:\n%s\nwant exit %d and %q", tc.args, code, out.String(), tc.code, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"2%": 0.02, "0.02": 0.02, "100%": 1, " 5 %": 0.05} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1%", "2x", "101%"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) = nil error", in)
		}
	}
}

// Issue 13, item 16: 'baton rollout --abort' and '--promote' print the
// rollout as the command leaves it (the switcher answers with that state;
// see switcher.TestSteerAnswersTheStateAfterTheCommand).
func TestRolloutPrintsTheStateAfterTheCommand(t *testing.T) {
	var got admin.SteerResponse
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(got)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("BATON_ADMIN", srv.URL)
	base := switcher.RolloutStatus{Kind: "rollout", Version: "v2", Old: "blue", New: "green", Steps: []int{10, 50}, Step: 1,
		Since: time.Now(), StepSince: time.Now()}
	for _, tc := range []struct {
		flag, phase string
		percent     int
		want, not   string
	}{
		{"--abort", "aborting", 0, "aborting: rollout v2, all requests go to blue again; green is drained and stopped", "10%"},
		{"--promote", "promoting", 100, "promoting: rollout v2, green takes all requests; blue is drained and stopped", "10%"},
	} {
		got = admin.SteerResponse{Message: tc.phase + "…", Rollout: base}
		got.Rollout.Phase, got.Rollout.Percent = tc.phase, tc.percent
		var out bytes.Buffer
		if code := run(context.Background(), []string{"rollout", tc.flag}, &out, &out); code != 0 {
			t.Fatalf("rollout %s: exit %d\n%s", tc.flag, code, out.String())
		}
		if !strings.Contains(out.String(), tc.want) || strings.Contains(out.String(), tc.not) {
			t.Errorf("rollout %s printed:\n%s\nwant %q and no %q", tc.flag, out.String(), tc.want, tc.not)
		}
	}
}
