package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime"
	"testing"
)

func TestVersion(t *testing.T) {
	v := buildVersion{Version: "1.4.2", Commit: "58e1c4bd0a11e0f70896dc69b8883bf3f74bc334", Modified: true, Go: "go1.26.8", Platform: "linux/amd64"}
	if got, want := v.String(), "baton 1.4.2 (go1.26.8 linux/amd64, commit 58e1c4bd0a11+dirty)"; got != want {
		t.Errorf("String() = %q; want %q", got, want)
	}
	v.Modified, v.Commit = false, ""
	if got, want := v.String(), "baton 1.4.2 (go1.26.8 linux/amd64)"; got != want {
		t.Errorf("without build info: %q; want %q", got, want)
	}

	var out bytes.Buffer
	if err := runVersion([]string{"--json"}, &out); err != nil {
		t.Fatal(err)
	}
	var got buildVersion
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("baton version --json: %q: %v", out.String(), err)
	}
	if got.Version != version || got.Go != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("baton version --json = %+v; want version %s, %s, %s/%s", got, version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	if err := runVersion([]string{"extra"}, &out); !errors.Is(err, errUsage) {
		t.Errorf("baton version extra: %v; want a usage error (exit 2)", err)
	}
}
