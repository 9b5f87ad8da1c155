package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/batonproxy/baton/admin"
)

func parseServe(args ...string) (serveConfig, error) {
	var cfg serveConfig
	fs := newFlagSet("serve", serveSynopsis, io.Discard)
	cfg.flags(fs)
	if err := parseFlags(fs, args); err != nil {
		return cfg, err
	}
	return cfg, errors.Join(cfg.validate(), cfg.serviceConfig.validate())
}

// TestServeLaunchFlags is issue 13, item 11: a --run template that would
// fail at the first deploy is refused when baton starts, with every
// problem; and the retention and --run-user flags are checked there too.
func TestServeLaunchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // parts of the error; none for no error
	}{
		{[]string{"--run", "java -jar {artifact} --server.port={port}"}, nil},
		{[]string{"--run", "exec java -jar {artifact} --port $PORT"}, nil},
		{[]string{"--run", "java -Dserver.port=${PORT} -jar {artifact} --color {color} --v {version}"}, nil},
		{[]string{"--run", "java -jar {artefact} --server.port={port} --x {colour}"}, []string{"{artefact}", "{colour}"}},
		{[]string{"--run", "java -jar {artifact}"}, []string{"uses neither {port} nor $PORT"}},
		{[]string{"--run", "java -jar {artefact}"}, []string{"{artefact}", "uses neither {port} nor $PORT"}},
		{[]string{"--run", "echo $PORTS; java -jar {artifact}"}, []string{"uses neither {port} nor $PORT"}},
		{[]string{"--keep-releases", "0"}, []string{"--keep-releases 0"}},
		{[]string{"--max-log-size", "1KiB"}, []string{"--max-log-size 1k: want at least 4KiB"}},
		{[]string{"--keep-logs", "0"}, []string{"--keep-logs 0"}},
		{[]string{"--run-user", "root"}, []string{"--run-user needs --run"}},
		{[]string{"--run", "x {port}", "--run-user", "no-such-user-of-baton"}, []string{"--run-user", "no-such-user-of-baton"}},
		{[]string{"--run", "x {port}", "--ssh", "deploy@app1", "--ssh-insecure-ignore-host-key", "--run-user", "root"}, []string{"--run-user is for apps on this machine"}},
	} {
		_, err := parseServe(tc.args...)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%q: %v; want no error", tc.args, err)
			}
			continue
		}
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %v; want one with %q", tc.args, err, w)
			}
		}
	}
	cfg, err := parseServe("--run", "x {port}", "--run-user", "root")
	if err != nil || cfg.Launch.runAs == nil || cfg.Launch.runAs.UID != 0 {
		t.Errorf("--run-user root: %+v, %v; want uid 0", cfg.Launch.runAs, err)
	}
}

// TestServeWarnsOfAnUnreachableSSHHost is issue 13, item 11: an SSH target
// that does not resolve does not stop baton, but is a warning in its log
// and in status.
func TestServeWarnsOfAnUnreachableSSHHost(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	blue, green := newEdgeApp(t, "blue"), newEdgeApp(t, "green")
	b := startServe(t, blue, green, "--run", "app --port {port}", "--ssh", "deploy@no-such-host.invalid",
		"--ssh-key", key, "--ssh-insecure-ignore-host-key")
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(b.adminURL() + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		var st admin.StatusResponse
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "no-such-host.invalid") }) {
			var out bytes.Buffer
			printStatus(&out, st, time.Now())
			if !strings.Contains(out.String(), "WARNING: at start, the SSH host deploy@no-such-host.invalid was out of reach") {
				t.Errorf("baton status does not show the warning:\n%s", out.String())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status warnings %q; want one about no-such-host.invalid", st.Warnings)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExampleSystemdUnit keeps examples/systemd/baton.service what issue
// 13 (item 8) asks: baton as an unprivileged user with only the
// capabilities it needs, the usual hardening, reload through 'baton
// upgrade', and an ExecStart whose flags 'baton serve' accepts. The
// Debian package's unit (packaging/baton.service) is held to the same
// settings, so the two cannot drift, and starts from the packaged config.
func TestExampleSystemdUnit(t *testing.T) {
	example, packaged := readUnit(t, "../../examples/systemd/baton.service"), readUnit(t, "../../packaging/baton.service")
	for name, unit := range map[string]map[string]string{"example": example, "packaged": packaged} {
		for k, want := range map[string]string{
			"User": "baton", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/baton",
			"PrivateTmp": "yes", "ExecReload": "/usr/bin/baton upgrade", "KillMode": "process",
			"AmbientCapabilities": "CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_KILL CAP_CHOWN",
		} {
			if unit[k] != want {
				t.Errorf("%s unit: %s=%q; want %q", name, k, unit[k], want)
			}
		}
	}
	for k, v := range example {
		if k != "ExecStart" && packaged[k] != v {
			t.Errorf("packaged unit: %s=%q; the example has %q", k, packaged[k], v)
		}
	}
	args := shellWords(t, example["ExecStart"])
	if len(args) < 2 || args[0] != "/usr/bin/baton" || args[1] != "serve" {
		t.Fatalf("ExecStart %q; want /usr/bin/baton serve …", args)
	}
	// The unit's app user does not exist here: stand in the test's own.
	if i := slices.Index(args, "--run-user"); i > 0 && i+1 < len(args) {
		args[i+1] = strconv.Itoa(os.Getuid())
	}
	cfg, err := parseServe(args[2:]...)
	if err != nil {
		t.Fatalf("'baton serve' refuses the unit's flags %q: %v", args[2:], err)
	}
	if cfg.Launch.RunUser == "" {
		t.Errorf("the unit does not run the apps as another user (--run-user)")
	}
	pargs := shellWords(t, packaged["ExecStart"])
	if i := slices.Index(pargs, "--config"); len(pargs) < 2 || pargs[1] != "serve" || i < 0 || i+1 >= len(pargs) || pargs[i+1] != "/etc/baton/baton.yaml" {
		t.Fatalf("packaged ExecStart %q; want baton serve --config /etc/baton/baton.yaml", pargs)
	}
	i := slices.Index(pargs, "--config")
	pargs[i+1] = "../../packaging/baton.yaml"
	if _, err := parseServe(pargs[2:]...); err != nil {
		t.Fatalf("'baton serve' refuses the packaged unit's flags %q: %v", pargs[2:], err)
	}
}

// readUnit returns a systemd unit file's settings (the last of each key),
// continued lines joined.
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	var key, val string
	for _, line := range strings.Split(string(b), "\n") {
		if key != "" { // a continued line
			val += " " + strings.TrimSpace(strings.TrimSuffix(line, "\\"))
		} else if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			key, val = k, strings.TrimSuffix(v, "\\")
		}
		if !strings.HasSuffix(line, "\\") && key != "" {
			unit[key] = strings.TrimSpace(val)
			key = ""
		}
	}
	return unit
}

// shellWords splits s at spaces, keeping single-quoted parts together, as
// systemd does for ExecStart.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			inQuote, have = !inQuote, true
		case r == ' ' && !inQuote:
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}
