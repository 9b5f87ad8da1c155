package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

const serviceSynopsis = `Usage: baton service stop NAME [flags]

Stops the app instances of service NAME, which a 'baton reload' removed
from the config file: a reload leaves them running (they are yours), and
lists them. baton stops what it launched for the service, on both
colours, as it stops an old version after a deploy (SIGTERM, then SIGKILL
after the service's --stop-timeout), and forgets them in its state. A
service still in the config file is refused: remove it and reload first.

baton remembers the removed services until it restarts; after that, stop
their instances by the PIDs the reload printed.

Exits 0 when every instance was stopped, 1 when one could not be (or baton
could not be reached), 2 on misuse (no such removed service).`

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "stop" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(stdout, serviceSynopsis)
			return nil
		}
		return usageError(errors.New("want 'baton service stop NAME'"))
	}
	var (
		cf     clientFlags
		asJSON bool
	)
	fs := newFlagSet("service stop", serviceSynopsis, stdout)
	fs.BoolVar(&asJSON, "json", false, "print the raw NDJSON progress lines")
	cf.register(fs)
	// The name first, as in 'baton service stop shop --json'; parseFlags
	// refuses any other argument.
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		if len(args) >= 2 && (args[1] == "-h" || args[1] == "--help") {
			fmt.Fprintln(stdout, serviceSynopsis)
			return nil
		}
		return usageError(errors.New("want a service name: baton service stop NAME"))
	}
	name := args[1]
	if err := parseFlags(fs, args[2:]); err != nil {
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/services/"+url.PathEscape(name)+"/stop", nil)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.code == http.StatusNotFound {
			return usageError(errors.New(ae.Message))
		}
		return err
	}
	defer resp.Body.Close()
	return printStream(resp.Body, stdout, asJSON)
}
