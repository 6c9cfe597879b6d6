package diagnose

import (
	"context"
	"fmt"
	"time"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// probeOAuthRoute checks an OAuth2 route's token endpoint and reports true
// when the route is one. client_credentials: a real token request, then the
// probe request with that token. authorization_code: no customer is needed:
// oauth's Probe sends a made-up refresh token, which the endpoint must refuse
// with invalid_grant (proving TLS, the client certificate and the client
// authentication were accepted); the probe request is skipped, as no
// customer token exists.
func (d *routeCheck) probeOAuthRoute(ctx context.Context, r *route.Route) bool {
	t := d.rc.Token
	if t == nil || r.Tokens == nil || (t.Type != config.TokenAuthorizationCode && t.Type != config.TokenClientCredentials) {
		return false
	}
	fix := "check token.url, client_id, auth_method and its credential (client_secret or private_key), and the client certificate"
	tctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	start := time.Now()
	if ac, ok := r.Tokens.Source().(*oauth.AuthCode); ok {
		if err := ac.Probe(tctx); err != nil {
			d.step("token", Fail, err.Error(), fix)
		} else {
			d.step("token", OK, fmt.Sprintf("the token endpoint accepted the client (a made-up refresh token was refused with invalid_grant in %s)",
				time.Since(start).Round(time.Millisecond)), "")
		}
		d.step("probe", Skip, "per-customer route: no customer token to probe with", "")
		return true
	}
	var tok *tokencache.Token
	tok, err := r.Tokens.Source().Fetch(tctx, "")
	if err != nil {
		d.step("token", Fail, err.Error(), fix)
		d.step("probe", Skip, "skipped: no token", "")
		return true
	}
	d.step("token", OK, fmt.Sprintf("client_credentials token obtained in %s, expires in %s",
		time.Since(start).Round(time.Millisecond), time.Until(tok.Expiry).Round(time.Second)), "")
	d.checkProbe(ctx, r, tok)
	return true
}
