// Package admin serves tokenproxy's admin endpoints: liveness, readiness,
// metrics and the pages mounted beside them (the status page). It never serves a secret.
package admin

import (
	"encoding/json"
	"net/http"
)

// Readiness reports whether the server can serve traffic, and why not.
type Readiness interface {
	Ready() (bool, string)
}

// Mount is one more page of the admin listener (the status page).
type Mount struct {
	// Pattern is a http.ServeMux pattern, such as "GET /status".
	Pattern string
	Handler http.Handler
}

// Handler returns the admin mux: /healthz (the process is up), /readyz
// (credentials loaded and not draining), when metrics is non-nil, /metrics,
// and the pages of more.
func Handler(r Readiness, metrics http.Handler, more ...Mount) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := r.Ready()
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]any{"ready": ok, "status": why})
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	for _, m := range more {
		mux.Handle(m.Pattern, m.Handler)
	}
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
