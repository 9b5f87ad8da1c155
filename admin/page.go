package admin

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// The status page: GET / on the admin listener serves one embedded HTML
// file (CSS and JavaScript inline, no framework, nothing from elsewhere).
// The page holds no data: it reads GET /v1/events with the token from
// sessionStorage in an Authorization header (never in a URL, never a
// cookie, so a cross-site request carries nothing and there is no CSRF
// surface), and it only reads: nothing on it changes state.

//go:embed page/index.html
var pageHTML []byte

// pageCSP allows the page's own inline style and script and requests to
// its own origin only.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// servePage answers GET / with the page. It needs no token: the page is
// the same for everyone and shows nothing until the token is given.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(pageHTML)
	}
}

var errNoStreaming = errors.New("this connection cannot stream")

// eventsInterval is how often the events stream looks for a change; it
// sends only when something changed, and a comment every
// eventsKeepAlive so that proxies and the page know it is alive.
const (
	eventsInterval  = 250 * time.Millisecond
	eventsKeepAlive = 15 * time.Second
)

// events streams GET /v1/services's answer as server-sent events
// (text/event-stream, "event: services"), once at once and again each
// time it changes, until the client leaves or the server shuts down. One
// stream per open page replaces a poll per second per tab.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return withStatus(http.StatusInternalServerError, errNoStreaming)
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	tick := time.NewTicker(eventsInterval)
	defer tick.Stop()
	var last []byte
	lastSent := time.Now()
	for {
		body, err := json.Marshal(s.servicesResponse())
		if err != nil {
			return nil // the stream has started: nothing to answer with
		}
		switch {
		case !bytes.Equal(body, last):
			if _, err := w.Write(append(append([]byte("event: services\ndata: "), body...), "\n\n"...)); err != nil {
				return nil
			}
			last, lastSent = body, time.Now()
			flusher.Flush()
		case time.Since(lastSent) >= eventsKeepAlive:
			if _, err := w.Write([]byte(": alive\n\n")); err != nil {
				return nil
			}
			lastSent = time.Now()
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return nil
		case <-s.done:
			return nil
		case <-tick.C:
		}
	}
}
