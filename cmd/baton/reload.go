package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/batonproxy/baton/admin"
)

const reloadSynopsis = `Usage: baton reload [flags]

Makes 'baton serve --config FILE' read its config file again and apply it
(POST /v1/reload): services are added, removed or changed in place, and a
service whose settings did not change is not touched (its connections,
WebSockets and streams stay open). A removed service takes no new requests
and finishes those in flight; its app instances are left running, and this
command lists them. A file with any error changes nothing: every problem is
printed with its line.

Exits 0 when the file was applied, 1 when it was refused (or baton could not
be reached), 2 on misuse.`

func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		cf     clientFlags
		asJSON bool
	)
	fs := newFlagSet("reload", reloadSynopsis, stdout)
	fs.BoolVar(&asJSON, "json", false, "print the answer as JSON")
	cf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/reload", nil)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && len(ae.Problems) > 0 {
			return refusedReload(ae.Problems)
		}
		return err
	}
	defer resp.Body.Close()
	var rr admin.ReloadResponse
	if ok, err := readAnswer(resp.Body, 4<<20, stdout, asJSON, &rr, "the answer"); !ok {
		return err
	}
	printReload(stdout, rr)
	return nil
}

// refusedReload is the error of a reload refused for the problems of its
// file, one a line.
func refusedReload(problems []string) error {
	what := "1 problem"
	if len(problems) != 1 {
		what = fmt.Sprintf("%d problems", len(problems))
	}
	return fmt.Errorf("reload refused, nothing changed: %s in the config file:\n  %s", what, strings.Join(problems, "\n  "))
}

func printReload(w io.Writer, rr admin.ReloadResponse) {
	fmt.Fprintf(w, "reloaded %s\n", rr.Message)
	list := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(w, "  %-10s %s\n", what+":", strings.Join(names, ", "))
		}
	}
	list("added", rr.Added)
	list("changed", rr.Changed)
	list("rerouted", rr.Rerouted)
	for _, s := range rr.Removed {
		fmt.Fprintf(w, "  %-10s %s: takes no new requests; its requests in flight finish\n", "removed:", s.Name)
		for _, in := range s.Instances {
			what := in.Color
			if in.AppVersion != "" {
				what += " " + in.AppVersion
			}
			if in.PID > 0 {
				what += fmt.Sprintf(" pid %d", in.PID)
			}
			if in.Host != "" {
				what += " on " + in.Host
			}
			fmt.Fprintf(w, "  %-10s   %s at %s is left running: 'baton service stop %s' stops it\n", "", what, in.Addr, s.Name)
		}
	}
	list("unchanged", rr.Unchanged)
}
