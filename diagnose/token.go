package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

var ipRE = regexp.MustCompile(`\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:]+)\b`)

func (d *routeCheck) checkToken(ctx context.Context, r *route.Route) *tokencache.Token {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	start := time.Now()
	tok, err := r.Tokens.Source().Fetch(ctx, "")
	var fe *tokencache.FetchError
	switch {
	case err == nil:
		d.step("token", OK, fmt.Sprintf("obtained in %s, expires in %s", time.Since(start).Round(time.Millisecond), time.Until(tok.Expiry).Round(time.Second)), "")
		return tok
	case errors.As(err, &fe) && fe.Throttled():
		d.step("token", Warn, "the token endpoint answered 429 (throttled); retry after "+round(fe.RetryAfter).String(),
			"too many token requests from this IP: check that no other client shares the credentials, and lower rate_limit")
	case errors.As(err, &fe) && fe.Status == http.StatusUnauthorized:
		d.step("token", Fail, "the token endpoint rejected the username or password (HTTP 401)",
			"set token.username/password to the M2M user's credentials for this environment")
	case errors.As(err, &fe) && fe.Status == http.StatusForbidden:
		detail := "the token endpoint refused this client (HTTP 403)"
		if ip := ipRE.FindString(fe.Excerpt); ip != "" {
			detail += "; the provider saw the request come from " + ip
		}
		d.step("token", Fail, detail, "your egress IP is probably not whitelisted: ask the provider to whitelist the IP above (the gateway's egress IP, not the pod's)")
	default:
		u, _ := url.Parse(d.rc.Token.URL)
		fix := fixFor(problem.Classify(err), u.Host)
		if fix == "" {
			fix = "check token.url and that the endpoint accepts the client certificate"
		}
		d.step("token", Fail, err.Error(), fix)
	}
	return nil
}

// checkProbe sends check.path through the route as the proxy would send an
// app's request: prepared (token, signature, header hygiene) by the route and
// carried by its transport.
func (d *routeCheck) checkProbe(ctx context.Context, r *route.Route, tok *tokencache.Token) {
	if d.rc.Check.Path == "" {
		d.step("probe", Skip, "no check.path configured", "")
		return
	}
	ref, err := url.Parse(d.rc.Check.Path)
	if err != nil {
		d.step("probe", Fail, "check.path: "+err.Error(), "")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	in, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.Upstream.Host+ref.RequestURI(), nil)
	if err != nil {
		d.step("probe", Fail, "check.path: "+err.Error(), "")
		return
	}
	in.Header.Set("Accept", "application/json")
	out, err := r.Prepare(in, nil, tok)
	if err != nil {
		d.step("probe", Fail, err.Error(), "")
		return
	}
	resp, err := r.Transport.RoundTrip(out)
	if err != nil {
		d.step("probe", Fail, err.Error(), fixFor(problem.Classify(err), r.Upstream.Host))
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	d.probeVerdict("GET "+ref.Path, resp.StatusCode, body)
}

func (d *routeCheck) probeVerdict(what string, status int, body []byte) {
	switch {
	case status < 300:
		d.step("probe", OK, fmt.Sprintf("%s -> %d (%d bytes)", what, status, len(body)), "")
	case status == http.StatusNotFound:
		d.step("probe", Fail, what+" -> 404", "the user has no access to accounts: ask the provider's administrator to grant the M2M user access (Banking Circle answers 404 then)")
	case status == http.StatusUnauthorized:
		d.step("probe", Fail, what+" -> 401: the API did not accept the token", "check that the token endpoint and the API belong to the same environment")
	case status == http.StatusForbidden:
		detail := what + " -> 403"
		if ip := ipRE.FindString(string(body)); ip != "" {
			detail += "; the provider saw the request come from " + ip
		}
		d.step("probe", Fail, detail, "your egress IP is probably not whitelisted for the API")
	default:
		d.step("probe", Warn, fmt.Sprintf("%s -> %d", what, status), "")
	}
}
