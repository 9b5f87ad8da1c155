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
