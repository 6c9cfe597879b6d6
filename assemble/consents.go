package assemble

import (
	"net/http"
	"strings"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/route"
)

// ConsentHandler returns the consent API (oauth.NewAPI) for the built
// routes, with callers authenticated exactly as the proxy does: by the
// allow policy of the route the path names (gateway callers in
// Proxy-Authorization or, for a plain API client, Authorization: Basic;
// source CIDRs). A deleted consent's cached token is dropped at once.
func ConsentHandler(routes []*route.Route, cfg oauth.APIConfig) (http.Handler, error) {
	byName := map[string]*route.Route{}
	for _, r := range routes {
		byName[r.Name] = r
	}
	cfg.Authenticate = func(req *http.Request) (string, error) {
		rt := byName[req.PathValue("route")]
		if rt == nil {
			return "", nil // the API answers unknown_route
		}
		if req.Header.Get("Proxy-Authorization") == "" && strings.HasPrefix(strings.ToLower(req.Header.Get("Authorization")), "basic ") {
			req = req.Clone(req.Context())
			req.Header.Set("Proxy-Authorization", req.Header.Get("Authorization"))
		}
		caller, denied := rt.Authorize(req)
		if denied != nil {
			return "", denied
		}
		return caller, nil
	}
	next := cfg.Deleted
	cfg.Deleted = func(name, owner, subject string) {
		if rt := byName[name]; rt != nil && rt.Tokens != nil {
			rt.Tokens.Forget(oauth.SubjectKey(owner, subject))
		}
		if next != nil {
			next(name, owner, subject)
		}
	}
	return oauth.NewAPI(cfg)
}
