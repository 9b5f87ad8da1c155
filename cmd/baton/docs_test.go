package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestDocsConfigFilesAreValid checks that every config file the docs show
// (a ```yaml block with services:) is one 'baton serve' accepts, so that a
// user who copies one gets no error from it.
func TestDocsConfigFilesAreValid(t *testing.T) {
	block := regexp.MustCompile("(?s)```yaml\n(.*?)```")
	n := 0
	for _, doc := range []string{"../../docs/services.md", "../../docs/from-nginx.md", "../../docs/edge.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range block.FindAllSubmatch(text, -1) {
			if !regexp.MustCompile(`(?m)^services:`).Match(m[1]) {
				continue
			}
			n++
			file := filepath.Join(t.TempDir(), "baton.yaml")
			if err := os.WriteFile(file, m[1], 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := checkConfigFile(file)
			if err != nil {
				t.Errorf("%s: a config file it shows is refused:\n%s\n%v", doc, m[1], err)
			}
		}
	}
	if n < 2 {
		t.Errorf("found %d config files in the docs; want at least 2 (is the test reading the right files?)", n)
	}
}

// TestPackagedConfigIsValid: the /etc/baton/baton.yaml the Debian package
// installs is accepted as it is, and so is its commented services example
// once uncommented (what an operator does first).
func TestPackagedConfigIsValid(t *testing.T) {
	const path = "../../packaging/baton.yaml"
	if _, err := checkConfigFile(path); err != nil {
		t.Fatalf("%s as packaged: %v", path, err)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^# (services:|  .*)$`).ReplaceAll(text, []byte("$1"))
	file := filepath.Join(t.TempDir(), "baton.yaml")
	os.WriteFile(file, uncommented, 0o600)
	scs, err := checkConfigFile(file)
	if err != nil {
		t.Fatalf("%s with its services uncommented:\n%s\n%v", path, uncommented, err)
	}
	if len(scs) != 3 {
		t.Errorf("%d services once uncommented; want the example's 3", len(scs))
	}
}
