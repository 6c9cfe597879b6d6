package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
)

// Probe checks a route's token endpoint without a customer, for `tokenproxy
// check`: it sends a refresh_token grant with a token the bank cannot know.
// invalid_grant means the TLS connection, the client certificate and the
// client authentication were all accepted, and Probe returns nil; any other
// answer is returned as an error naming the route.
func (a *AuthCode) Probe(ctx context.Context) error {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"tokenproxy-check-" + randomString()}}
	_, err := a.cfg.Endpoint.token(ctx, form)
	var ee *endpointError
	switch {
	case err == nil:
		return fmt.Errorf("route %s: the token endpoint accepted a made-up refresh token", a.Route())
	case errors.As(err, &ee) && ee.Code == "invalid_grant":
		return nil
	}
	return err
}
