package edge

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePrefixes parses trusted-proxy entries: CIDR prefixes ("10.0.0.0/8",
// "fd00::/8") or single addresses ("192.0.2.7", taken as /32 or /128).
// Empty entries are skipped. Every bad entry is reported.
func ParsePrefixes(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("%q: want a CIDR prefix like 10.0.0.0/8 or an address", e))
				continue
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: want a CIDR prefix like 10.0.0.0/8 or an address", e))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}

// ParseSize parses a byte size: a plain number of bytes, or one with a
// suffix k, m or g (powers of 1024, as nginx reads them), optionally followed
// by "b" or "ib", any case: "1048576", "512k", "10M", "1GiB". "0" is zero.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "ib")
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with k, m or g (e.g. 10m)", s)
	}
	return n * mult, nil
}
