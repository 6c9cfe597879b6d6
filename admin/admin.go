// Package admin serves tokenproxy's admin endpoints: liveness, readiness
// and metrics. It never serves a secret.
package admin

import (
	"encoding/json"
	"net/http"
)

// Readiness reports whether the server can serve traffic, and why not.
type Readiness interface {
	Ready() (bool, string)
}

// Handler returns the admin mux: /healthz (the process is up), /readyz
// (credentials loaded and not draining) and, when metrics is non-nil, /metrics.
func Handler(r Readiness, metrics http.Handler) http.Handler {
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
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
