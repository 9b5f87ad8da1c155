package sampleapp

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestFailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fail")
	srv := httptest.NewServer(failWhileFileExists(Handler("v2", ""), "v2", path))
	t.Cleanup(srv.Close)
	status := func(p string) int {
		t.Helper()
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if v := resp.Header.Get(VersionHeader); v != "v2" {
			t.Errorf("GET %s: version header %q; want v2", p, v)
		}
		return resp.StatusCode
	}
	if got := status("/"); got != 200 {
		t.Fatalf("GET / without the file: %d; want 200", got)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]int{"/": 500, "/anything": 500, "/health": 200, "/stats": 200} {
		if got := status(p); got != want {
			t.Errorf("GET %s with the file: %d; want %d", p, got, want)
		}
	}
	os.Remove(path)
	if got := status("/"); got != 200 {
		t.Errorf("GET / after the file is gone: %d; want 200", got)
	}
}
