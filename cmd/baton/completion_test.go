package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionInBash sources 'baton completion bash' in a real bash and
// completes as a user's TAB does: a command's start to the command, a
// flag's start to the flag (learned from the command's own flag set), and
// 'service' to 'stop'.
func TestCompletionInBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is not installed; it is what this test runs in")
	}
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "baton"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var script bytes.Buffer
	if err := runCompletion([]string{"bash"}, &script); err != nil {
		t.Fatal(err)
	}
	scriptPath := filepath.Join(dir, "baton.bash")
	os.WriteFile(scriptPath, script.Bytes(), 0o600)
	complete := func(words ...string) []string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd := exec.Command(bash, "-c", `source "$1"; COMP_WORDS=(`+strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _baton; printf '%s\n' "${COMPREPLY[@]}"`, "bash", scriptPath)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"baton", "dep"}, "deploy"},
		{[]string{"baton", "deploy", "--ser"}, "--service --server-path"},
		{[]string{"baton", "serve", "--acme-e"}, "--acme-email"},
		{[]string{"baton", "status", "--js"}, "--json"},
		{[]string{"baton", "service", ""}, "stop"},
		{[]string{"baton", "comp"}, "completion"},
	} {
		if got := strings.Join(complete(c.words...), " "); got != c.want {
			t.Errorf("completing %q: %q; want %q", c.words, got, c.want)
		}
	}
}

func TestCompletionMisuse(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{nil, {"tcsh"}, {"bash", "zsh"}} {
		if err := runCompletion(args, &out); !errors.Is(err, errUsage) {
			t.Errorf("baton completion %q: %v; want a usage error (exit 2)", args, err)
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		out.Reset()
		if err := runCompletion([]string{sh}, &out); err != nil || !strings.Contains(out.String(), "baton __complete") {
			t.Errorf("baton completion %s: %v, %q; want a script that asks baton __complete", sh, err, out.String())
		}
		path, err := exec.LookPath(sh)
		if err != nil {
			t.Errorf("%s is not installed (.ci/run installs it): its script is not checked", sh)
			continue
		}
		if msg, err := exec.Command(path, "-n", "-c", out.String()).CombinedOutput(); err != nil {
			t.Errorf("%s -n refuses its script: %v\n%s", sh, err, msg)
		}
	}
}

// TestCompletionInFish completes in a real fish, as its TAB does
// (complete -C): a command's start, and a flag's.
func TestCompletionInFish(t *testing.T) {
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Fatal("fish is not installed (.ci/run installs it)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "baton"), ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var script bytes.Buffer
	runCompletion([]string{"fish"}, &script)
	scriptPath := filepath.Join(dir, "baton.fish")
	os.WriteFile(scriptPath, script.Bytes(), 0o600)
	for line, want := range map[string]string{"baton dep": "deploy", "baton deploy --ser": "--server-path --service"} {
		cmd := exec.Command(fish, "--no-config", "-c", "source $argv[1]; complete -C $argv[2]", scriptPath, line)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+dir)
		cmd.Dir = t.TempDir() // fish offers file names too (flag values are files): none here
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v\n%s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, strings.Fields(l)[0])
		}
		if g := strings.Join(got, " "); g != want {
			t.Errorf("fish completing %q: %q; want %q", line, g, want)
		}
	}
}
