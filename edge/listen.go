package edge

import (
	"errors"
	"fmt"
	"net"
)

// ListenConfig names the sockets Listen opens. An empty address is not
// opened and leaves the matching Listeners field nil.
type ListenConfig struct {
	HTTP  string // public plain-HTTP address, e.g. ":80"
	HTTPS string // public HTTPS address, e.g. ":443"; empty when TLS is off
	Admin string // admin API address, e.g. "127.0.0.1:9900"
	// Listen opens (or takes over) the socket for addr, called name
	// ("http", "https" or "admin"). Nil means net.Listen; a self-upgrade
	// passes a function that returns sockets inherited from the previous
	// baton or from systemd.
	Listen func(name, addr string) (net.Listener, error)
}

// Listeners holds every socket baton serves on. Keeping them together, opened
// by one function, is what lets a future self-upgrade (or systemd socket
// activation) pass them on without any server knowing where they came from.
//
// A nil field was not asked for. Close closes all of them.
type Listeners struct {
	HTTP  net.Listener
	HTTPS net.Listener
	Admin net.Listener
}

// Listen opens the TCP listeners named in cfg. If one fails, the ones already
// opened are closed and the error names the address.
func Listen(cfg ListenConfig) (*Listeners, error) {
	ls := &Listeners{}
	listen := cfg.Listen
	if listen == nil {
		listen = func(_, addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	for _, l := range []struct {
		name, key, addr string
		ln              *net.Listener
	}{
		{"public HTTP", "http", cfg.HTTP, &ls.HTTP},
		{"public HTTPS", "https", cfg.HTTPS, &ls.HTTPS},
		{"admin", "admin", cfg.Admin, &ls.Admin},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := listen(l.key, l.addr)
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("%s listener on %s: %w", l.name, l.addr, err)
		}
		*l.ln = ln
	}
	return ls, nil
}

// Close closes every listener that is open. Closing one that a server already
// closed is harmless; errors about that are not reported.
func (ls *Listeners) Close() error {
	var errs []error
	for _, ln := range []net.Listener{ls.HTTP, ls.HTTPS, ls.Admin} {
		if ln == nil {
			continue
		}
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Addr returns ln's address as a string, or "" if ln is nil: convenient for
// logs.
func Addr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}
