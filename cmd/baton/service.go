package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/pflag"

	"github.com/batonproxy/baton/admin"
)

// serviceFlag is --service (-s) of the client commands that drive one
// service: deploy, switch, rollback, rollout, status.
type serviceFlag struct {
	fs   *pflag.FlagSet
	name string
}

func (f *serviceFlag) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVarP(&f.name, "service", "s", "", "the service to act on, by `name`; may be left out while baton has one service ('baton status' lists them)")
}

// set reports whether --service was given.
func (f *serviceFlag) set() bool { return f.fs.Changed("service") }

// check refuses an empty --service.
func (f *serviceFlag) check() error {
	if f.set() && f.name == "" {
		return usageError(errors.New("--service is empty: give a service's name ('baton status' lists them)"))
	}
	return nil
}

// path returns the admin API path of op ("deploy", "rollout/promote",
// "status", ...) for the service: /v1/services/NAME/op with --service.
// Without it, the route without a name (/v1/op) if baton has one service
// (or is a baton from before services); with several it is a usage
// error that lists them.
func (f *serviceFlag) path(ctx context.Context, c *adminClient, op string) (string, error) {
	if err := f.check(); err != nil {
		return "", err
	}
	if f.set() {
		return "/v1/services/" + url.PathEscape(f.name) + "/" + op, nil
	}
	list, err := fetchServices(ctx, c)
	switch {
	case errors.Is(err, errNoServicesAPI):
		return "/v1/" + op, nil
	case err != nil:
		return "", err
	}
	if len(list.Services) > 1 {
		return "", severalServices(list.Services)
	}
	return "/v1/" + op, nil
}

// severalServices is the usage error of a command that needs --service.
func severalServices(svcs []admin.ServiceSummary) error {
	names := make([]string, len(svcs))
	for i, s := range svcs {
		names[i] = s.Name
	}
	return &misuse{err: fmt.Errorf("several services (%s): say which with --service", strings.Join(names, ", ")), plain: true}
}

// errNoServicesAPI is the answer of a baton from before services, which
// has no GET /v1/services: it has one service, on the routes without a name.
var errNoServicesAPI = errors.New("the admin API has no GET /v1/services")

// fetchServices reads GET /v1/services.
func fetchServices(ctx context.Context, c *adminClient) (admin.ServicesResponse, error) {
	list, _, err := fetchServicesRaw(ctx, c)
	return list, err
}

// fetchServicesRaw is fetchServices that also returns the answer as it
// came.
func fetchServicesRaw(ctx context.Context, c *adminClient) (admin.ServicesResponse, []byte, error) {
	var list admin.ServicesResponse
	resp, err := c.do(ctx, http.MethodGet, "/v1/services", nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.code == http.StatusNotFound {
		return list, nil, errNoServicesAPI
	}
	if err != nil {
		return list, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return list, nil, fmt.Errorf("reading the list of services: %w", err)
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return list, nil, fmt.Errorf("decoding the list of services: %w", err)
	}
	return list, raw, nil
}

// serviceError turns the admin API's answer that --service names no
// service into a usage error listing the services; other errors are
// returned as they are.
func (f *serviceFlag) serviceError(err error) error {
	var ae *apiError
	if f.set() && errors.As(err, &ae) && ae.code == http.StatusNotFound && ae.Services != nil {
		if len(ae.Services) == 0 {
			return usageError(fmt.Errorf("--service %s: no such service; baton has none", f.name))
		}
		return usageError(fmt.Errorf("--service %s: no such service; the services are %s", f.name, strings.Join(ae.Services, ", ")))
	}
	return err
}
