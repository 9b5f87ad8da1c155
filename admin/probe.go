package admin

import (
	"errors"
	"net/http"
	"strings"
	"time"
)

// The probe of a deploy runs in the CLI ('baton deploy --probe'), where the
// users' side is; when it ends the CLI hands its verdict and timeline plot
// to baton (POST .../probe), so that the status page can show them. Only
// the last one of each service is kept, in memory.

// maxProbeBytes bounds a probe record: a timeline plot of a long deploy
// at a high rate is a few hundred KiB of SVG.
const maxProbeBytes = 4 << 20

// ProbeInfo is what a probe saw, without the plot.
type ProbeInfo struct {
	// DeployID is the operation it watched.
	DeployID string `json:"deploy_id,omitempty"`
	// Pass is the verdict; Summary says it in words (requests, failures,
	// latency), as the CLI printed it.
	Pass    bool      `json:"pass"`
	Summary string    `json:"summary"`
	Time    time.Time `json:"time"`
}

// ProbeRecord is a ProbeInfo with its timeline plot, an SVG document.
type ProbeRecord struct {
	ProbeInfo
	SVG string `json:"svg"`
}

func (s *Server) saveProbe(w http.ResponseWriter, r *http.Request, svc Service) error {
	var rec ProbeRecord
	if err := decodeBodyLimit(w, r, &rec, maxProbeBytes); err != nil {
		return err
	}
	svg := strings.TrimSpace(rec.SVG)
	if !strings.HasPrefix(svg, "<svg") && !strings.HasPrefix(svg, "<?xml") || !strings.HasSuffix(svg, "</svg>") {
		return withStatus(http.StatusBadRequest, errors.New(`"svg": want an SVG document (<svg ...>...</svg>), the probe's timeline plot`))
	}
	if rec.Summary == "" {
		return withStatus(http.StatusBadRequest, errors.New(`"summary": want the probe's summary`))
	}
	rec.Time = time.Now().UTC()
	s.probesMu.Lock()
	if s.probes == nil {
		s.probes = map[string]ProbeRecord{}
	}
	s.probes[svc.Name] = rec
	s.probesMu.Unlock()
	writeJSON(w, http.StatusOK, rec.ProbeInfo)
	return nil
}

func (s *Server) getProbe(w http.ResponseWriter, r *http.Request, svc Service) error {
	s.probesMu.Lock()
	rec, ok := s.probes[svc.Name]
	s.probesMu.Unlock()
	if !ok {
		return withStatus(http.StatusNotFound, errors.New("no probed deploy of service "+svc.Name+" since baton started ('baton deploy --probe URL' sends one)"))
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}
