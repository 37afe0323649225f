package httpapi

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/tokenline/tokenline/adapters/httpapi/apitypes"
)

// readyTimeout bounds all readiness checks together.
const readyTimeout = 2 * time.Second

// handleHealth answers 200 while the process serves HTTP.
func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, apitypes.HealthResponse{Status: "ok"})
}

// handleReady runs every readiness check concurrently and answers 200, or
// 503 with the reasons.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	reasons := make([]string, len(s.cfg.Ready))
	degraded := make([]string, len(s.cfg.Ready))
	var wg sync.WaitGroup
	for i, c := range s.cfg.Ready {
		wg.Go(func() {
			done := make(chan error, 1)
			go func() { done <- c.Probe.Ready(ctx) }()
			select {
			case err := <-done:
				if err != nil {
					reasons[i] = c.Name + ": " + err.Error()
				}
			case <-ctx.Done():
				reasons[i] = c.Name + ": check timed out"
			}
			if c.Degrades {
				reasons[i], degraded[i] = "", reasons[i]
			}
		})
	}
	wg.Wait()
	empty := func(r string) bool { return r == "" }
	out, deg := slices.DeleteFunc(reasons, empty), slices.DeleteFunc(degraded, empty)
	if len(out) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, apitypes.HealthResponse{Status: "not_ready", Reasons: out, Degraded: deg})
		return
	}
	writeJSON(w, http.StatusOK, apitypes.HealthResponse{Status: "ready", Degraded: deg})
}
