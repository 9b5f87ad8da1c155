package edge

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "512k": 512 << 10, "10M": 10 << 20, "10m": 10 << 20,
		"1GiB": 1 << 30, "2MB": 2 << 20, "7b": 7, " 3K ": 3 << 10,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "k", "1.5m", "10x", "99999999999g"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d; want an error", in, got)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes([]string{"10.0.0.0/8", " 192.0.2.7 ", "", "fd00::1/8", "::ffff:198.51.100.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("198.51.100.1/32"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("ParsePrefixes = %v; want %v", got, want)
	}
	if _, err := ParsePrefixes([]string{"10.0.0.0/33", "nope", "10.0.0.1"}); err == nil {
		t.Error("ParsePrefixes accepted bad entries")
	}
}
