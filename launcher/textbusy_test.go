package launcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestInstallWhileOthersForkNeverTextBusy: releases installed while
// another goroutine keeps starting processes (another service's deploys)
// can be executed at once: none fails with ETXTBSY, "text file busy",
// which happens when a child forked while the release was open for
// writing still holds it (installFile writes under syscall.ForkLock).
func TestInstallWhileOthersForkNeverTextBusy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "app.sh")
	if err := os.WriteFile(src, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var forks sync.WaitGroup
	forks.Go(func() {
		for !stop.Load() {
			exec.Command("/bin/true").Run()
		}
	})
	defer func() { stop.Store(true); forks.Wait() }()
	keep := func(string, os.FileMode) error { return nil }
	for i := 0; i < 300; i++ {
		dst := filepath.Join(dir, "release-"+strconv.Itoa(i))
		if err := installFile(src, dst, strconv.Itoa(i), keep); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(dst).CombinedOutput(); err != nil {
			if strings.Contains(err.Error(), "text file busy") || strings.Contains(string(out), "Text file busy") {
				t.Fatalf("install %d: exec right after install: %v (text file busy)", i, err)
			}
			t.Fatalf("install %d: %v %s", i, err, out)
		}
	}
}
