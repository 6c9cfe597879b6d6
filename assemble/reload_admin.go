package assemble

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/reload"
	"github.com/tokenproxy/tokenproxy/secret"
)

// ReloadPath is the admin listener's reload endpoint (POST).
const ReloadPath = "/-/reload"

// reloadEndpoint adds POST /-/reload to the admin listener when the
// assembly can reload (Setup.Load). Without admin.reload_token, it answers
// only while the admin listener binds loopback (403 beyond); with one, it
// requires it as "Authorization: Bearer <token>" (401 otherwise), compared
// in constant time. The token is read once here, so a missing secret fails
// the start.
func (a *Assembly) reloadEndpoint(po *proxy.Options) error {
	if po.Admin == nil || a.setup.Load == nil {
		return nil
	}
	var token secret.Source
	if ref := a.Config.Admin.ReloadToken; !ref.IsZero() {
		src, err := ref.Open(a.Options().vault())
		if err != nil {
			return &problem.FieldError{Path: "admin.reload_token", Err: err}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if v, err := src.Get(ctx); err != nil || v.Reveal() == "" {
			return &problem.FieldError{Path: "admin.reload_token", Err: err, Fix: "make the secret available and not empty (" + src.String() + ")"}
		}
		token = src
	}
	loopback := loopbackAddr(a.Config.Listen.Admin)
	inner := po.Admin
	po.Admin = func(s *proxy.Server) http.Handler {
		mux := http.NewServeMux()
		mux.Handle("/", inner(s))
		mux.HandleFunc("POST "+ReloadPath, func(w http.ResponseWriter, r *http.Request) { a.serveReload(w, r, token, loopback) })
		return mux
	}
	return nil
}

func (a *Assembly) serveReload(w http.ResponseWriter, r *http.Request, token secret.Source, loopback bool) {
	switch {
	case token == nil && !loopback:
		writeAdminJSON(w, http.StatusForbidden, map[string]string{"error": "reload_forbidden",
			"message": "the admin listener binds beyond loopback: a reload over it needs a credential; set admin.reload_token and send it as Authorization: Bearer"})
		return
	case token != nil:
		want, err := token.Get(r.Context())
		if err != nil {
			a.Log.Warn("the reload credential could not be read", zap.Error(err))
			writeAdminJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "reload_token_unavailable",
				"message": "the reload credential (admin.reload_token) could not be read; see the log"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		g, s := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want.Reveal()))
		if !ok || subtle.ConstantTimeCompare(g[:], s[:]) != 1 {
			a.Log.Warn("reload request refused: no valid credential", zap.String("remote", r.RemoteAddr))
			w.Header().Set("WWW-Authenticate", `Bearer realm="tokenproxy admin"`)
			writeAdminJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized",
				"message": "a reload needs the credential of admin.reload_token as Authorization: Bearer"})
			return
		}
	}
	res := a.Reload(r.Context(), reload.TriggerAdmin)
	status := http.StatusOK
	switch res.Outcome {
	case reload.Refused:
		status = http.StatusConflict
	case reload.Failure:
		status = http.StatusUnprocessableEntity
	}
	writeAdminJSON(w, status, res)
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// loopbackAddr reports whether a listener address binds loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
