package assemble

import (
	"fmt"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/admin"
	"github.com/tokenproxy/tokenproxy/internal/version"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/status"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// statusPages are the status page's mounts on the admin listener: GET
// /status and GET /status.json, over the built parts and s's readiness.
func (a *Assembly) statusPages(s *proxy.Server) []admin.Mount {
	p := &status.Provider{Routes: a.Routes, CertSource: a.certSource, Ready: s.Ready,
		Version: version.String(), Consents: a.Consents != nil && a.Config.Consents != nil,
		LastReload: func() (time.Time, bool, string) {
			r := a.LastReload()
			return r.Time, r.OK(), r.Summary()
		},
		Census: func() (status.Census, bool) {
			c := a.census.Load()
			if c == nil {
				return status.Census{}, false
			}
			return *c, true
		},
	}
	if a.Metrics != nil {
		p.Gatherer = a.Metrics.Registry()
	}
	if vc := a.Vault; vc != nil {
		p.Dependencies = append(p.Dependencies, status.NamedHealth{Name: "vault", Health: func() status.Health {
			return vaultHealth(vc.Health())
		}})
	}
	if st := a.Store; st != nil {
		p.Dependencies = append(p.Dependencies, status.NamedHealth{Name: "redis", Health: func() status.Health {
			if err := st.Healthy(); err != nil {
				return status.Health{Error: err.Error()}
			}
			return status.Health{Up: true}
		}})
	}
	if p.Consents {
		p.Dependencies = append(p.Dependencies, status.NamedHealth{Name: "consent store", Health: func() status.Health {
			c := a.census.Load()
			switch {
			case c == nil:
				return status.Health{Up: true}
			case c.Err != nil:
				return status.Health{Since: c.At, Error: "the last census failed: " + c.Err.Error()}
			}
			return status.Health{Up: true, Since: c.At}
		}})
	}
	h := status.Handler(p)
	return []admin.Mount{{Pattern: "GET /status", Handler: h}, {Pattern: "GET /status.json", Handler: h}}
}

// vaultHealth is Vault's health for the status page: the client's own
// components (reachability, login) with their errors; failing certificate
// and key sources are counted, not named, since their names are Vault paths.
func vaultHealth(h vaultsrc.Health) status.Health {
	var since time.Time
	var msgs []string
	sources := 0
	for _, c := range h.Components {
		switch {
		case h.OK && c.Name == "vault":
			since = c.Since
		case c.OK:
		default:
			if since.IsZero() || c.Since.Before(since) {
				since = c.Since
			}
			if c.Name == "vault" || c.Name == "auth" {
				msgs = append(msgs, c.Name+": "+c.Error)
			} else {
				sources++
			}
		}
	}
	if sources > 0 {
		msgs = append(msgs, fmt.Sprintf("%d certificate or key source(s) failing (the log names them)", sources))
	}
	return status.Health{Up: h.OK, Since: since, Error: strings.Join(msgs, "; ")}
}

// certSource names where route's certificate of kind comes from: the
// configuration block's kind (pem, pkcs12, vault_kv, vault_pki,
// vault_transit, in_code).
func (a *Assembly) certSource(route, kind string) string {
	for _, rc := range a.Config.Routes {
		if rc.Name != route {
			continue
		}
		switch {
		case kind == "client":
			return rc.ClientCert.Kind()
		case kind == "signing" && rc.Signing != nil:
			return rc.Signing.Key.Kind()
		}
	}
	return ""
}

// keepCensus keeps the last consent census for the status page: on an
// error, the last good counts with the error.
func (a *Assembly) keepCensus(routes []string, cs *oauth.Census, err error) {
	c := &status.Census{At: time.Now(), Routes: routes, Err: err}
	if prev := a.census.Load(); prev != nil {
		c.ByState, c.Expiring = prev.ByState, prev.Expiring
	}
	if err == nil && cs != nil {
		c.ByState, c.Expiring = map[string]map[string]int{}, cs.ExpiringSoon
		for r, states := range cs.ByState {
			m := map[string]int{}
			for st, n := range states {
				m[string(st)] = n
			}
			c.ByState[r] = m
		}
	}
	a.census.Store(c)
}
