// Command app is the sample upstream application used by baton's end-to-end
// tests, demo and benchmarks. See package internal/sampleapp for its flags,
// routes and signal behaviour.
package main

import (
	"os"

	"github.com/batonproxy/baton/internal/sampleapp"
)

func main() {
	os.Exit(sampleapp.Main(os.Args[1:], os.Stdout, os.Stderr))
}
