package proxy

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the garbage collector target (GOGC) a process serving a
// Handler should run with when the GOGC environment variable does not set
// one; see SetGCPercentDefault.
//
// The proxy's live heap is small (about 1 MB with 50 client connections)
// while every request allocates a few KB, so at Go's default of 100 the heap
// goal sits at its 4 MB floor and the collector runs every few hundred
// requests: about 40 cycles a second at 16k requests a second on a 2-core
// machine, 3 µs of GC CPU per request. At 200 the goal is 8 MB and the GC
// costs 1 µs per request, for about 4 MB more peak RSS; 400 saves another
// 0.5 µs for 8 MB more. bench/RESULTS.md has the measurements.
const DefaultGCPercent = 200

// SetGCPercentDefault sets the garbage collector's target percentage to
// DefaultGCPercent unless the GOGC environment variable is set (which the
// runtime has then applied itself), and reports whether it did. It affects
// the whole process: call it once, early in main or serve. A memory limit
// (GOMEMLIMIT) is left to the operator: at baton's heap sizes it would only
// matter in a container with a tight memory limit, where ~90% of that limit
// is a sensible value.
func SetGCPercentDefault() bool {
	if _, ok := os.LookupEnv("GOGC"); ok {
		return false
	}
	debug.SetGCPercent(DefaultGCPercent)
	return true
}
