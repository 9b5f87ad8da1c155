package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const example = `# the example of docs/services.md
http: :80
log_format: json
services:
  shop:
    hosts: [shop.example.com, www.shop.example.com]
    blue: 127.0.0.1:8080
    green: 127.0.0.1:8081
    health_path: /actuator/health
    run: java -jar {artifact} --server.port={port}
  api:
    hosts:
      - api.example.com
    blue: 127.0.0.1:9080
    green: 127.0.0.1:9081
  shop-admin:
    hosts: [shop.example.com]
    path_prefix: /admin
    strip_prefix: false
    blue: 127.0.0.1:7080
    green: 127.0.0.1:7081
`

func TestParseKeepsOrderValuesAndLines(t *testing.T) {
	f, err := Parse("baton.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	wantTop := []Setting{
		{Key: "http", Values: []string{":80"}, Line: 2},
		{Key: "log_format", Values: []string{"json"}, Line: 3},
	}
	if !reflect.DeepEqual(f.Settings, wantTop) {
		t.Errorf("top-level settings = %+v; want %+v", f.Settings, wantTop)
	}
	if !f.HasServices || len(f.Services) != 3 {
		t.Fatalf("services = %+v; want shop, api, shop-admin", f.Services)
	}
	var names []string
	for _, s := range f.Services {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "shop,api,shop-admin" {
		t.Errorf("service order = %s; want the file's", got)
	}
	shop := f.Services[0]
	if shop.Line != 5 {
		t.Errorf("shop on line %d; want 5", shop.Line)
	}
	hosts, ok := shop.Setting("hosts")
	if !ok || !hosts.List || !reflect.DeepEqual(hosts.Values, []string{"shop.example.com", "www.shop.example.com"}) || hosts.Line != 6 {
		t.Errorf("shop hosts = %+v; want the flow list on line 6", hosts)
	}
	if run, _ := shop.Setting("run"); run.Values[0] != "java -jar {artifact} --server.port={port}" {
		t.Errorf("run = %q; want the template as written", run.Values)
	}
	if h, _ := f.Services[1].Setting("hosts"); !h.List || h.Values[0] != "api.example.com" || h.Line != 12 {
		t.Errorf("api hosts = %+v; want the block list on line 12", h)
	}
	if sp, _ := f.Services[2].Setting("strip_prefix"); sp.Values[0] != "false" || sp.List {
		t.Errorf("strip_prefix = %+v; want the scalar false", sp)
	}
}

func TestParseReportsEveryProblemWithItsLine(t *testing.T) {
	const bad = `http: :80
http: :81
admin:
services:
  Shop_1:
    blue: 127.0.0.1:8080
  api:
    blue: {a: b}
    green: 127.0.0.1:9081
    green: 127.0.0.1:9082
  api:
    blue: 127.0.0.1:1
`
	_, err := Parse("baton.yaml", []byte(bad))
	if err == nil {
		t.Fatal("Parse accepted a file with six problems")
	}
	want := []string{
		"baton.yaml:2: http is set twice (first on line 1)",
		"baton.yaml:3: admin has no value",
		`baton.yaml:5: service name "Shop_1": want lower-case letters`,
		"baton.yaml:8: blue: want a value or a list of values, not a mapping",
		"baton.yaml:10: service api: green is set twice (first on line 9)",
		"baton.yaml:11: service api is defined twice (first on line 7)",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems; want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d = %q; want it to start with %q", i+1, lines[i], w)
		}
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 2 {
		t.Errorf("errors.As(*Error) = %v; want the first problem at line 2", ce)
	}
}

func TestParseSyntaxErrorHasALine(t *testing.T) {
	_, err := Parse("baton.yaml", []byte("http: :80\nservices:\n  shop:\n    blue: [unclosed\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "baton.yaml:") || !strings.Contains(err.Error(), "not valid YAML") {
		t.Fatalf("err = %v; want a YAML syntax error with the file's name and a line", err)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Line == 0 {
		t.Errorf("err = %#v; want a line number", ce)
	}
	if _, err := Parse("baton.yaml", []byte("- a\n- b\n")); err == nil || !strings.Contains(err.Error(), "baton.yaml:1: want a mapping") {
		t.Errorf("a list at the top: err = %v; want a mapping asked for on line 1", err)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "services:\n"} {
		f, err := Parse("x.yaml", []byte(in))
		if err != nil || len(f.Settings) != 0 || len(f.Services) != 0 {
			t.Errorf("Parse(%q) = %+v, %v; want an empty file", in, f, err)
		}
	}
}

func testFlags() (*pflag.FlagSet, *struct {
	path    string
	passes  int
	drain   time.Duration
	noStop  bool
	domains []string
}) {
	v := &struct {
		path    string
		passes  int
		drain   time.Duration
		noStop  bool
		domains []string
	}{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.StringVar(&v.path, "health-path", "/healthz", "")
	fs.IntVar(&v.passes, "health-passes", 2, "")
	fs.DurationVar(&v.drain, "drain-timeout", 30*time.Second, "")
	fs.BoolVar(&v.noStop, "no-stop", false, "")
	fs.StringSliceVar(&v.domains, "domain", nil, "")
	return fs, v
}

func TestApplySetsFlagsWithTheirOwnParsers(t *testing.T) {
	fs, v := testFlags()
	f, err := Parse("b.yaml", []byte("health_path: /up\nhealth_passes: 3\ndrain_timeout: 1m30s\nno_stop: true\ndomain: [a.example, b.example]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, f.Settings, f.Path, "", nil); err != nil {
		t.Fatal(err)
	}
	if v.path != "/up" || v.passes != 3 || v.drain != 90*time.Second || !v.noStop || !reflect.DeepEqual(v.domains, []string{"a.example", "b.example"}) {
		t.Errorf("after Apply: %+v", *v)
	}
}

func TestApplyCommandLineWins(t *testing.T) {
	fs, v := testFlags()
	if err := fs.Parse([]string{"--health-passes=5"}); err != nil {
		t.Fatal(err)
	}
	f, _ := Parse("b.yaml", []byte("health_passes: 3\nhealth_path: /up\n"))
	if err := Apply(fs, f.Settings, f.Path, "", func(name string) bool { return fs.Changed(name) && name == "health-passes" }); err != nil {
		t.Fatal(err)
	}
	if v.passes != 5 || v.path != "/up" {
		t.Errorf("passes=%d path=%s; want 5 from the command line and /up from the file", v.passes, v.path)
	}
}

func TestApplyReportsEveryProblem(t *testing.T) {
	fs, v := testFlags()
	f, err := Parse("b.yaml", []byte("helth_path: /up\nhealth_passes: many\nhealth_path: [/a, /b]\ndrain-timeout: 1s\nno_stop: perhaps\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = Apply(fs, f.Settings, f.Path, "service shop", nil)
	want := []string{
		"b.yaml:1: service shop: unknown setting helth_path (did you mean health_path?)",
		`b.yaml:2: service shop: health_passes: invalid value "many": `,
		"b.yaml:3: service shop: health_path takes one value, not a list",
		"b.yaml:4: service shop: drain-timeout: write keys in snake_case: drain_timeout",
		`b.yaml:5: service shop: no_stop: invalid value "perhaps": `,
	}
	if err == nil {
		t.Fatal("Apply accepted five bad settings")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems; want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d = %q; want it to start with %q", i+1, lines[i], w)
		}
	}
	if v.path != "/healthz" {
		t.Errorf("health_path = %q; a refused list must not be half applied", v.path)
	}
}
