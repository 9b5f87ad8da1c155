package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
