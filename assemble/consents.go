package assemble

import (
	"context"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/route"
)

// forgetTimeout bounds withdrawing a deleted consent's token from the
// shared store.
const forgetTimeout = 2 * time.Second

// ConsentHandler returns the consent API (oauth.NewAPI) for the built
// routes, with callers authenticated exactly as the proxy does: by the
// allow policy of the route the path names (gateway callers in
// Proxy-Authorization or, for a plain API client, Authorization: Basic;
// source CIDRs). A deleted consent's token is dropped at once from this
// process, the shared store and, through it, every replica.
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
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	cfg.Deleted = func(name, owner, subject string) {
		if rt := byName[name]; rt != nil && rt.Tokens != nil {
			// Before the API answers: the shared store's token is gone and
			// every replica told (a forget message), so no replica reads it
			// back. A store that cannot be reached leaves it to each
			// replica's next confirmation (ConsentConfirmEvery).
			ctx, cancel := context.WithTimeout(context.Background(), forgetTimeout)
			err := rt.Tokens.ForgetEverywhere(ctx, oauth.SubjectKey(owner, subject))
			cancel()
			if err != nil {
				log.Warn("the deleted consent's token could not be withdrawn from the shared store; replicas drop it within "+
					ConsentConfirmEvery.String(), zap.String("route", name), zap.Error(err))
			}
		}
		if next != nil {
			next(name, owner, subject)
		}
	}
	return oauth.NewAPI(cfg)
}
