package loadgen

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// sampleReport is a switch from v1 to v2 with a 300ms outage in between.
func sampleReport() *Report {
	return &Report{
		Start: t0,
		End:   at(1000),
		Results: []Result{
			{Start: at(0), Duration: ms(10), Status: 200, Version: "v1", Kind: KindKeepAlive},
			{Start: at(100), Duration: ms(20), Status: 200, Version: "v1", Kind: KindPost},
			{Start: at(200), Duration: ms(5), Err: "read response: EOF", Class: ClassEOF, Kind: KindKeepAlive, Reused: true},
			{Start: at(300), Duration: ms(5), Status: 502, Kind: KindNewConn},
			{Start: at(400), Duration: ms(30), Status: 200, Version: "v2", Kind: KindKeepAlive},
			{Start: at(500), Duration: ms(1000), Status: 200, Version: "v1", Kind: KindSlow},
			{Start: at(600), Duration: ms(40), Status: 200, Version: "v2", Kind: KindKeepAlive},
		},
	}
}

func TestReportCounts(t *testing.T) {
	rep := sampleReport()
	if got := rep.Total(); got != 7 {
		t.Errorf("Total() = %d; want 7", got)
	}
	if got := len(rep.Failures()); got != 2 {
		t.Errorf("len(Failures()) = %d; want 2", got)
	}
	got := rep.FailuresByKind()
	if len(got) != 2 || got[ClassEOF] != 1 || got[ClassStatus5xx] != 1 {
		t.Errorf("FailuresByKind() = %v; want eof 1, status_5xx 1", got)
	}
}

func TestReportLongestGap(t *testing.T) {
	// Successes complete at 10, 120, 430, 640 and 1500; requests were sent
	// from 0 to 600. The quiet tail after 640, when only the slow request
	// was left, is no outage.
	rep := sampleReport()
	if got, want := rep.LongestGap(), ms(310); got != want {
		t.Errorf("LongestGap() = %v; want %v (120ms to 430ms)", got, want)
	}
	if from, to := rep.LongestGapWindow(); !from.Equal(at(120)) || !to.Equal(at(430)) {
		t.Errorf("LongestGapWindow() = +%v..+%v; want +120ms..+430ms", from.Sub(t0), to.Sub(t0))
	}
	allFail := &Report{Results: []Result{
		{Start: at(0), Duration: ms(10), Err: "x"},
		{Start: at(50), Duration: ms(100), Err: "x"},
	}}
	if got, want := allFail.LongestGap(), ms(150); got != want {
		t.Errorf("LongestGap() with no success = %v; want the whole span %v", got, want)
	}
	if got := (&Report{}).LongestGap(); got != 0 {
		t.Errorf("LongestGap() of an empty report = %v; want 0", got)
	}
}

func TestReportPercentile(t *testing.T) {
	rep := sampleReport() // ok durations: 10 20 30 40 1000
	tests := []struct {
		p    float64
		want time.Duration
	}{
		{0, ms(10)}, {20, ms(10)}, {50, ms(30)}, {80, ms(40)}, {99, ms(1000)}, {100, ms(1000)},
	}
	for _, tt := range tests {
		if got := rep.Percentile(tt.p); got != tt.want {
			t.Errorf("Percentile(%v) = %v; want %v", tt.p, got, tt.want)
		}
	}
	if got := rep.PercentileKind(KindKeepAlive, 100); got != ms(40) {
		t.Errorf("PercentileKind(keepalive, 100) = %v; want 40ms", got)
	}
	if got := (&Report{}).Percentile(50); got != 0 {
		t.Errorf("Percentile of an empty report = %v; want 0", got)
	}
}

func TestReportSeen(t *testing.T) {
	rep := sampleReport()
	tests := []struct {
		version     string
		first, last time.Time
		ok          bool
	}{
		{"v1", at(0), at(500), true},
		{"v2", at(400), at(600), true},
		{"v3", time.Time{}, time.Time{}, false},
	}
	for _, tt := range tests {
		first, ok1 := rep.FirstSeen(tt.version)
		last, ok2 := rep.LastSeen(tt.version)
		if first != tt.first || last != tt.last || ok1 != tt.ok || ok2 != tt.ok {
			t.Errorf("%s: FirstSeen %v %v, LastSeen %v %v; want %v, %v, %v",
				tt.version, first, ok1, last, ok2, tt.first, tt.last, tt.ok)
		}
	}
	if got := rep.Versions(); strings.Join(got, ",") != "v1,v2" {
		t.Errorf("Versions() = %q; want [v1 v2]", got)
	}
}

func TestReportSummary(t *testing.T) {
	s := sampleReport().Summary()
	for _, want := range []string{
		"requests: 7 in 1s (7.0/s), 5 ok, 2 failed",
		"failures: eof 1, status_5xx 1 (first: keepalive read response: EOF)",
		"by kind: keepalive 4 (1 failed), newconn 1 (1 failed), post 1, slow 1",
		"latency ok: p50 30ms p99 1s max 1s",
		"longest gap without a success: 310ms",
		"version v1: 3 ok, first +0s, last +500ms",
		"version v2: 2 ok, first +400ms, last +600ms",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Summary() lacks %q:\n%s", want, s)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{io.EOF, ClassEOF},
		{fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), ClassEOF},
		{&os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}, ClassReset},
		{&os.SyscallError{Syscall: "write", Err: syscall.EPIPE}, ClassReset},
		{&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}, ClassRefused},
		{os.ErrDeadlineExceeded, ClassTimeout},
		{errors.New("malformed HTTP response"), ClassOther},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %q; want %q", tt.err, got, tt.want)
		}
	}
}

func TestCheckEcho(t *testing.T) {
	if err := checkEcho([]byte("v1 2048\n"), 2048); err != nil {
		t.Errorf("checkEcho(match) = %v; want nil", err)
	}
	if err := checkEcho([]byte("v1 2047\n"), 2048); err == nil {
		t.Error("checkEcho(short) = nil; want an error")
	}
	if err := checkEcho([]byte("hello"), 5); err == nil {
		t.Error("checkEcho(garbage) = nil; want an error")
	}
}
