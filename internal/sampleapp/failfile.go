package sampleapp

import (
	"io"
	"net/http"
	"os"
)

// failWhileFileExists answers 500 to every request but the health check and
// /stats while a file called path exists: an app that passes its health
// checks and then, when a test says so, starts failing its users (for the
// judge of a canary or a watch).
func failWhileFileExists(h http.Handler, version, path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" || r.URL.Path == "/stats" {
			h.ServeHTTP(w, r)
			return
		}
		if _, err := os.Stat(path); err != nil {
			h.ServeHTTP(w, r)
			return
		}
		if r.Body != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		}
		w.Header().Set(VersionHeader, version)
		writeText(w, http.StatusInternalServerError, "fail\n")
	})
}
