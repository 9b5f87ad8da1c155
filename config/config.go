// Package config reads baton's configuration file (baton.yaml).
//
// The model: the file says nothing that a command-line flag cannot say.
// Its top-level keys are the snake_case names of 'baton serve' flags
// (health_path for --health-path), and each entry under services: holds the
// per-service flags of one service plus its routing keys (hosts,
// path_prefix, strip_prefix). Parse only finds the keys, their values and
// their lines; Apply hands each value to the flag of the same name, so
// every value is parsed and checked by one parser, the flag's, whether it
// came from the command line or the file. A flag given on the command line
// wins over the file.
//
// Every problem found is reported, each with its line, and nothing is
// applied from a file that has one: callers build their new configuration
// from a File only once Parse and every Apply returned nil.
package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// ServicesKey is the top-level key that holds the services.
const ServicesKey = "services"

// File is a parsed configuration file. The zero value is an empty file.
type File struct {
	// Path is where the file was read from, as given; errors name it.
	Path string
	// Settings are the top-level keys other than services, in file order.
	Settings []Setting
	// Services are the entries under services:, in file order.
	Services []Service
	// HasServices reports whether the file has a services: key at all (an
	// empty one included).
	HasServices bool
}

// Setting is one key with its value(s) as written.
type Setting struct {
	// Key is the key as written, e.g. "health_path".
	Key string
	// Values holds the scalar's text, or each item's of a sequence.
	Values []string
	// List reports whether the value was a sequence ([a, b] or - items).
	List bool
	// Line is the key's line, counting from 1.
	Line int
}

// FlagName is the name of the flag the setting stands for: "health_path"
// is --health-path.
func (s Setting) FlagName() string { return strings.ReplaceAll(s.Key, "_", "-") }

// Service is one entry under services:.
type Service struct {
	// Name is the entry's key: a lower-case DNS label.
	Name string
	// Line is the line of its name.
	Line int
	// Settings are its keys in file order.
	Settings []Setting
}

// Setting returns the service's setting with the given key, if it has one.
func (s Service) Setting(key string) (Setting, bool) {
	for _, st := range s.Settings {
		if st.Key == key {
			return st, true
		}
	}
	return Setting{}, false
}

// Error is one problem in a file, with its position.
type Error struct {
	Path string
	Line int // 0 when the problem has no line (the file cannot be read)
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.Path + ": " + e.Msg
	}
	return e.Path + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
}

// Errorf returns an *Error at path and line.
func Errorf(path string, line int, format string, args ...any) error {
	return &Error{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// serviceName is what a service may be called: a DNS label, lower case, so
// that it can stand in a metric label, a cookie name and a URL path.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidServiceName reports whether name can name a service.
func ValidServiceName(name string) bool { return serviceName.MatchString(name) }

// Parse parses a configuration file's contents. path is used in errors.
// The error, if not nil, joins one *Error per problem found.
func Parse(path string, data []byte) (*File, error) {
	f := &File{Path: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, syntaxError(path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return f, nil // an empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, Errorf(path, root.Line, "want a mapping of settings (key: value) at the top, not %s", kindName(root))
	}
	var errs []error
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if prev, dup := seen[k.Value]; dup {
			errs = append(errs, Errorf(path, k.Line, "%s is set twice (first on line %d)", k.Value, prev))
			continue
		}
		seen[k.Value] = k.Line
		if k.Value == ServicesKey {
			f.HasServices = true
			svcs, err := parseServices(path, v)
			errs = append(errs, err)
			f.Services = svcs
			continue
		}
		s, err := parseSetting(path, k, v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.Settings = append(f.Settings, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

func parseServices(path string, n *yaml.Node) ([]Service, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil // "services:" with nothing under it
	}
	if n.Kind != yaml.MappingNode {
		return nil, Errorf(path, n.Line, "services: want a mapping of service names to their settings, not %s", kindName(n))
	}
	var (
		svcs []Service
		errs []error
		seen = map[string]int{}
	)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if prev, dup := seen[k.Value]; dup {
			errs = append(errs, Errorf(path, k.Line, "service %s is defined twice (first on line %d)", k.Value, prev))
			continue
		}
		seen[k.Value] = k.Line
		if !ValidServiceName(k.Value) {
			errs = append(errs, Errorf(path, k.Line, "service name %q: want lower-case letters, digits and '-' (a DNS label, at most 63)", k.Value))
		}
		svc := Service{Name: k.Value, Line: k.Line}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			// A service with nothing but defaults.
		case v.Kind != yaml.MappingNode:
			errs = append(errs, Errorf(path, v.Line, "service %s: want a mapping of settings, not %s", k.Value, kindName(v)))
			continue
		}
		keys := map[string]int{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			sk, sv := v.Content[j], v.Content[j+1]
			if prev, dup := keys[sk.Value]; dup {
				errs = append(errs, Errorf(path, sk.Line, "service %s: %s is set twice (first on line %d)", k.Value, sk.Value, prev))
				continue
			}
			keys[sk.Value] = sk.Line
			s, err := parseSetting(path, sk, sv)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			svc.Settings = append(svc.Settings, s)
		}
		svcs = append(svcs, svc)
	}
	return svcs, errors.Join(errs...)
}

func parseSetting(path string, k, v *yaml.Node) (Setting, error) {
	s := Setting{Key: k.Value, Line: k.Line}
	if k.Kind != yaml.ScalarNode || k.Value == "" {
		return s, Errorf(path, k.Line, "want a setting name as the key, not %s", kindName(k))
	}
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return s, Errorf(path, k.Line, "%s has no value", k.Value)
		}
		s.Values = []string{v.Value}
	case yaml.SequenceNode:
		s.List = true
		s.Values = []string{}
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				return s, Errorf(path, item.Line, "%s: want a list of plain values, not %s", k.Value, kindName(item))
			}
			s.Values = append(s.Values, item.Value)
		}
	default:
		return s, Errorf(path, v.Line, "%s: want a value or a list of values, not %s", k.Value, kindName(v))
	}
	return s, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "nothing"
}

// yamlLine finds the line in the YAML library's error messages, which say
// "yaml: line 7: did not find expected key".
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxError(path string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Errorf(path, line, "not valid YAML: %s", m[2])
	}
	return &Error{Path: path, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

// Apply sets each setting on the flag of fs it names (health_path sets
// --health-path), with the flag's own parser, skipping the flags for which
// given returns true: those the command line set, which win over the
// file. A key that names no flag in fs, a value the flag refuses, and a
// list for a flag that takes one value are errors; every one is reported,
// with its line. what says whose settings these are in messages ("" at the
// top level, "service shop" for a service).
func Apply(fs *pflag.FlagSet, settings []Setting, path, what string, given func(flag string) bool) error {
	var errs []error
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	for _, s := range settings {
		name := s.FlagName()
		fl := fs.Lookup(name)
		if strings.Contains(s.Key, "-") && fl != nil {
			errs = append(errs, Errorf(path, s.Line, "%s%s: write keys in snake_case: %s", prefix, s.Key, strings.ReplaceAll(s.Key, "-", "_")))
			continue
		}
		if fl == nil {
			errs = append(errs, Errorf(path, s.Line, "%sunknown setting %s%s", prefix, s.Key, suggest(fs, s.Key)))
			continue
		}
		if given != nil && given(name) {
			continue
		}
		multi := isMulti(fl)
		if s.List && !multi {
			errs = append(errs, Errorf(path, s.Line, "%s%s takes one value, not a list", prefix, s.Key))
			continue
		}
		for _, v := range s.Values {
			if err := fs.Set(name, v); err != nil {
				errs = append(errs, Errorf(path, s.Line, "%s%s: %s", prefix, s.Key, flagError(err)))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// isMulti reports whether a flag takes several values (set once per value).
func isMulti(fl *pflag.Flag) bool {
	t := fl.Value.Type()
	return strings.HasSuffix(t, "Slice") || strings.HasSuffix(t, "Array")
}

// flagError shortens pflag's `invalid argument "x" for "--f" flag: why`
// to `invalid value "x": why`: the file has no flag to name.
func flagError(err error) string {
	msg := err.Error()
	i := strings.Index(msg, " flag: ")
	if !strings.HasPrefix(msg, "invalid argument ") || i < 0 {
		return msg
	}
	val := msg[len("invalid argument "):i]
	if j := strings.LastIndex(val, " for "); j >= 0 {
		val = val[:j]
	}
	return "invalid value " + val + ": " + msg[i+len(" flag: "):]
}

// suggest names the known setting closest to key, for a typo.
func suggest(fs *pflag.FlagSet, key string) string {
	want := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	type cand struct {
		name string
		dist int
	}
	var cands []cand
	fs.VisitAll(func(fl *pflag.Flag) {
		name := strings.ReplaceAll(fl.Name, "-", "_")
		if d := distance(want, name); d <= 2 || name == want {
			cands = append(cands, cand{name, d})
		}
	})
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].dist < cands[j].dist })
	return " (did you mean " + cands[0].name + "?)"
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
