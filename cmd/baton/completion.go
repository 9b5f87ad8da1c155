package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spf13/pflag"
)

// Shell completion. The scripts 'baton completion SHELL' prints ask baton
// itself what may come next ('baton __complete WORDS...'), and baton learns
// a command's flags from the flag set the command builds when it runs
// (captureFlags): a flag added to a command is completed without a list
// to keep in step.

const completionSynopsis = `Usage: baton completion bash|zsh|fish

Prints a shell completion script for baton's commands and their flags.
  bash:  source <(baton completion bash)      (or save it in /etc/bash_completion.d/baton)
  zsh:   source <(baton completion zsh)       (in .zshrc, after compinit)
  fish:  baton completion fish > ~/.config/fish/completions/baton.fish`

// completeCommand is the hidden command the scripts call.
const completeCommand = "__complete"

var completionScripts = map[string]string{
	"bash": `# bash completion for baton: source <(baton completion bash)
_baton() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(baton __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _baton baton
`,
	"zsh": `# zsh completion for baton: source <(baton completion zsh), after compinit
autoload -U +X bashcompinit && bashcompinit
_baton() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	local IFS=$'\n'
	COMPREPLY=($(compgen -W "$(baton __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _baton baton
`,
	"fish": `# fish completion for baton: baton completion fish > ~/.config/fish/completions/baton.fish
complete -c baton -a '(baton __complete (commandline -opc)[2..-1] 2>/dev/null)'
`,
}

func runCompletion(args []string, stdout io.Writer) error {
	fs := newFlagSet("completion", completionSynopsis, stdout)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError(err)
	}
	shells := slices.Sorted(func(yield func(string) bool) {
		for sh := range completionScripts {
			if !yield(sh) {
				return
			}
		}
	})
	if fs.NArg() != 1 {
		return usageError(fmt.Errorf("want one shell: baton completion %s", strings.Join(shells, "|")))
	}
	script, ok := completionScripts[fs.Arg(0)]
	if !ok {
		return usageError(fmt.Errorf("no completion for shell %q; baton has them for %s", fs.Arg(0), strings.Join(shells, ", ")))
	}
	_, err := io.WriteString(stdout, script)
	return err
}

// commandLine matches a command's line in usage: two spaces, the name, and
// its description after spaces.
var commandLine = regexp.MustCompile(`(?m)^  ([a-z]+) +\S`)

// commands returns baton's commands, as usage lists them.
func commands() []string {
	var names []string
	for _, m := range commandLine.FindAllStringSubmatch(usage[strings.Index(usage, "Commands:"):], -1) {
		names = append(names, m[1])
	}
	return names
}

// runComplete prints, one a line, what may follow words (the words typed
// after "baton", without the one being completed): the commands after
// none, 'stop' after 'service', else the flags of the command. The shell
// filters them by what was typed so far.
func runComplete(ctx context.Context, words []string, stdout io.Writer) int {
	var out []string
	switch {
	case len(words) == 0:
		out = commands()
	case words[0] == "service" && len(words) == 1:
		out = []string{"stop"}
	case slices.Contains(commands(), words[0]):
		args := []string{words[0]}
		if words[0] == "service" {
			args = append(args, "stop", "NAME")
		}
		if fs := flagsOf(ctx, args); fs != nil {
			fs.VisitAll(func(f *pflag.Flag) {
				if !f.Hidden && f.Deprecated == "" {
					out = append(out, "--"+f.Name)
				}
			})
		}
	}
	for _, w := range out {
		fmt.Fprintln(stdout, w)
	}
	return exitOK
}

// capture is where, while flagsOf runs, the flag set of the command it
// runs goes.
var capture struct {
	mu   sync.Mutex // one flagsOf at a time
	want atomic.Bool
	fs   atomic.Pointer[pflag.FlagSet]
}

// errCaptured ends a command run by flagsOf at its flag parsing.
var errCaptured = errors.New("flags captured for completion")

// captureFlags reports whether fs, the flag set a command is about to
// parse, was taken for completion instead: then the command must return
// errCaptured at once, having done nothing.
func captureFlags(fs *pflag.FlagSet) bool {
	if !capture.want.CompareAndSwap(true, false) {
		return false
	}
	capture.fs.Store(fs)
	return true
}

// flagsOf runs the command args up to its flag parsing and returns its
// flag set (nil if it has none).
func flagsOf(ctx context.Context, args []string) *pflag.FlagSet {
	capture.mu.Lock()
	defer capture.mu.Unlock()
	capture.fs.Store(nil)
	capture.want.Store(true)
	defer capture.want.Store(false)
	run(ctx, args, io.Discard, io.Discard)
	return capture.fs.Load()
}
