package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"go.uber.org/zap"
)

// APIConfig configures the consent API.
type APIConfig struct {
	// Routes are the authorization-code routes the API serves, by name.
	Routes []*AuthCode
	// Store keeps started consents until the customer returns: the consent
	// store every replica shares, so that a consent started on one replica
	// completes on another (default: the first route's store).
	Store consentstore.Store
	// Authenticate names the caller of a request, exactly as the proxy does
	// (gateway callers; "" in sidecar mode). An error is answered 401.
	Authenticate func(r *http.Request) (caller string, err error)
	// CallbackURL is this API's GET /v1/callback as the bank's browser
	// redirect reaches it: the redirect_uri registered at the bank.
	CallbackURL string
	// ReturnURLs are where the callback may send the browser afterwards; a
	// start request picks one with return_url (default: the first). Without
	// any, the callback answers a small JSON page instead.
	ReturnURLs []string
	// StateTTL bounds how long a started consent may wait for the customer
	// (default 10 minutes).
	StateTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives one line per failed code exchange (never a code or a
	// token); nil discards.
	Log *zap.Logger
	// Deleted, when set, is told of every consent the API deleted (after
	// the store forgot it), so that a token cached for it is dropped.
	Deleted func(route, owner, subject string)
}

// API is the consent API, an http.Handler:
//
//	POST   /v1/routes/{route}/consents/{subject}           start: the bank's authorize URL (after PAR when configured)
//	GET    /v1/callback                                    the bank's redirect; exchanges the code
//	POST   /v1/routes/{route}/consents/{subject}/exchange  exchange a code the app received
//	GET    /v1/routes/{route}/consents/{subject}           status (never tokens)
//	GET    /v1/routes/{route}/consents                     the caller's consents
//	DELETE /v1/routes/{route}/consents/{subject}           revoke and delete
//
// A caller only ever sees, uses and deletes its own subjects.
type API struct {
	cfg    APIConfig
	routes map[string]*AuthCode
	mux    *http.ServeMux
}

// NewAPI returns the consent API.
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.Authenticate == nil {
		return nil, errors.New("consent API: an authenticate function is required")
	}
	if u, err := url.Parse(cfg.CallbackURL); err != nil || u.Host == "" {
		return nil, errors.New("consent API: callback URL must be an absolute URL")
	}
	if cfg.StateTTL <= 0 {
		cfg.StateTTL = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Store == nil && len(cfg.Routes) > 0 {
		cfg.Store = cfg.Routes[0].cfg.Store
	}
	a := &API{cfg: cfg, routes: map[string]*AuthCode{}, mux: http.NewServeMux()}
	for _, r := range cfg.Routes {
		a.routes[r.Route()] = r
	}
	a.mux.HandleFunc("POST /v1/routes/{route}/consents/{subject}", a.authed(a.start))
	a.mux.HandleFunc("POST /v1/routes/{route}/consents/{subject}/exchange", a.authed(a.exchange))
	a.mux.HandleFunc("GET /v1/routes/{route}/consents/{subject}", a.authed(a.status))
	a.mux.HandleFunc("GET /v1/routes/{route}/consents", a.authed(a.list))
	a.mux.HandleFunc("DELETE /v1/routes/{route}/consents/{subject}", a.authed(a.remove))
	a.mux.HandleFunc("GET /v1/callback", a.callback)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "not_found", "no such consent API endpoint", "")
	})
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

type handler func(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode)

// challenge is the WWW-Authenticate value of the API's 401 (RFC 9110
// §11.6.1): callers authenticate as the proxy's gateway callers do, with
// HTTP Basic (caller name and password) in Authorization or
// Proxy-Authorization, the realm the proxy's Proxy-Authenticate names.
const challenge = `Basic realm="tokenproxy"`

// authed authenticates the caller and resolves the route.
func (a *API) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("route")
		caller, err := a.cfg.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", challenge)
			writeErr(w, http.StatusUnauthorized, "unauthorized", "the caller could not be authenticated", name)
			return
		}
		route := a.routes[name]
		if route == nil {
			writeErr(w, http.StatusNotFound, "unknown_route", "no authorization-code route of that name", name)
			return
		}
		if s := r.PathValue("subject"); s != "" {
			if err := consentstore.ValidateKey(consentstore.Key{Route: name, Owner: caller, Subject: s}); err != nil {
				writeErr(w, http.StatusBadRequest, "bad_subject", err.Error(), name)
				return
			}
		}
		h(w, r, caller, route)
	}
}

// writeErr answers the proxy's error shape.
func writeErr(w http.ResponseWriter, status int, code, msg, route string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Tokenproxy-Error", code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg, "route": route})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomString() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

type startRequest struct {
	// RedirectURI: the app keeps its own redirect_uri and will call exchange.
	RedirectURI string `json:"redirect_uri"`
	// ReturnURL: where the callback sends the browser (one of ReturnURLs).
	ReturnURL string `json:"return_url"`
}

func (a *API) start(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode) {
	var req startRequest
	if body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<10)); len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeErr(w, http.StatusBadRequest, "bad_request", "the body must be a JSON object with redirect_uri or return_url", route.Route())
			return
		}
	}
	p := &consentstore.Pending{Route: route.Route(), Owner: caller, Subject: r.PathValue("subject"), RedirectURI: a.cfg.CallbackURL,
		Expires: a.cfg.Now().Add(a.cfg.StateTTL)}
	switch {
	case req.RedirectURI != "":
		if u, err := url.Parse(req.RedirectURI); err != nil || u.Host == "" {
			writeErr(w, http.StatusBadRequest, "bad_request", "redirect_uri must be an absolute URL", route.Route())
			return
		}
		p.RedirectURI = req.RedirectURI
	case req.ReturnURL != "":
		if !contains(a.cfg.ReturnURLs, req.ReturnURL) {
			writeErr(w, http.StatusBadRequest, "bad_request", "return_url is not one of the configured return URLs", route.Route())
			return
		}
		p.ReturnURL = req.ReturnURL
	case len(a.cfg.ReturnURLs) > 0:
		p.ReturnURL = a.cfg.ReturnURLs[0]
	}
	challenge := ""
	if route.PKCE() {
		p.Verifier = randomString()
		sum := sha256.Sum256([]byte(p.Verifier))
		challenge = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	p.State = randomString()
	authURL, err := route.Authorize(r.Context(), p.State, challenge, p.RedirectURI)
	if err != nil {
		a.authorizeFailed(w, route, p.Subject, err)
		return
	}
	if err := a.putPending(r.Context(), p); errors.Is(err, consentstore.ErrPendingFull) {
		writeErr(w, http.StatusServiceUnavailable, "too_many_pending", "too many consents are waiting for their customer; retry later", route.Route())
		return
	} else if err != nil {
		a.cfg.Log.Warn("storing a started consent failed", zap.String("route", route.Route()), zap.String("subject", p.Subject), zap.Error(err))
		writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the consent store could not be written", route.Route())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"authorize_url": authURL,
		"state": p.State, "expires_at": p.Expires.UTC(), "route": route.Route(), "subject": p.Subject})
}

// authorizeFailed answers a start whose authorization request the bank
// refused (PAR) or could not be made: 502, nothing stored.
func (a *API) authorizeFailed(w http.ResponseWriter, route *AuthCode, subject string, err error) {
	a.cfg.Log.Warn("starting a consent failed", zap.String("route", route.Route()), zap.String("subject", subject), zap.Error(err))
	code := "authorization_request_failed"
	var ae *AuthorizeError
	if errors.As(err, &ae) {
		if _, _, refused := ae.Refused(); refused {
			code = "authorization_request_refused"
		}
	}
	writeErr(w, http.StatusBadGateway, code, err.Error(), route.Route())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// errNoStore: the API serves no route, so it has no store for started consents.
var errNoStore = errors.New("the consent API has no consent store")

func (a *API) putPending(ctx context.Context, p *consentstore.Pending) error {
	if a.cfg.Store == nil {
		return errNoStore
	}
	return a.cfg.Store.PutPending(ctx, p)
}

// takePending removes and returns the started consent for state from the
// shared store: single use across every replica. It answers nil, nil when
// the state is unknown, used or expired, and the route it was started on.
func (a *API) takePending(ctx context.Context, state string) (*consentstore.Pending, *AuthCode, error) {
	if state == "" || a.cfg.Store == nil {
		return nil, nil, nil
	}
	p, err := a.cfg.Store.TakePending(ctx, state)
	if errors.Is(err, consentstore.ErrNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	route := a.routes[p.Route]
	if route == nil || !a.cfg.Now().Before(p.Expires) {
		return nil, nil, nil
	}
	return p, route, nil
}

// callback is where the bank sends the customer's browser. It needs no
// caller: the state, kept server side, says whose consent this is.
func (a *API) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, route, err := a.takePending(r.Context(), q.Get("state"))
	if err != nil {
		a.cfg.Log.Warn("reading a started consent failed", zap.Error(err))
		writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the consent store could not be read", "")
		return
	}
	if p == nil || p.ReturnURL == "" && p.RedirectURI != a.cfg.CallbackURL {
		writeErr(w, http.StatusBadRequest, "invalid_state", "unknown, used or expired state; start the consent again", "")
		return
	}
	result := url.Values{"route": {route.Route()}, "subject": {p.Subject}}
	if err := route.CheckIssuer(q.Get("iss")); err != nil {
		// RFC 9207: neither the code nor the error of this response is used.
		a.cfg.Log.Warn("authorization response refused", zap.String("route", route.Route()), zap.String("subject", p.Subject), zap.Error(err))
		result.Set("error", "invalid_issuer")
	} else if e := q.Get("error"); e != "" {
		result.Set("error", safeCode(e))
	} else if _, err := route.Exchange(r.Context(), p.Owner, p.Subject, q.Get("code"), p.Verifier, p.RedirectURI); err != nil {
		a.cfg.Log.Warn("consent code exchange failed", zap.String("route", route.Route()), zap.String("subject", p.Subject), zap.Error(err))
		result.Set("error", "exchange_failed")
	} else {
		result.Set("status", "active")
		a.noteStored(route)
	}
	if p.ReturnURL == "" {
		writeJSON(w, http.StatusOK, flatten(result))
		return
	}
	u, _ := url.Parse(p.ReturnURL)
	qq := u.Query()
	for k, v := range result {
		qq[k] = v
	}
	u.RawQuery = qq.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (a *API) noteStored(r *AuthCode) {
	if r.cfg.Observer != nil {
		r.cfg.Observer.ConsentStored(r.Route())
	}
}

func safeCode(s string) string {
	if isToken(s) {
		return s
	}
	return "authorization_failed"
}

func flatten(v url.Values) map[string]string {
	m := map[string]string{}
	for k := range v {
		m[k] = v.Get(k)
	}
	return m
}

type exchangeRequest struct {
	Code  string `json:"code"`
	State string `json:"state"`
	// Iss is the authorization response's iss (RFC 9207), when it had one.
	Iss string `json:"iss"`
}

func (a *API) exchange(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode) {
	var req exchangeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 8<<10)).Decode(&req); err != nil || req.Code == "" || req.State == "" {
		writeErr(w, http.StatusBadRequest, "bad_request", "the body must be a JSON object with code and state", route.Route())
		return
	}
	p, started, err := a.takePending(r.Context(), req.State)
	if err != nil {
		a.cfg.Log.Warn("reading a started consent failed", zap.String("route", route.Route()), zap.Error(err))
		writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the consent store could not be read", route.Route())
		return
	}
	if p != nil && (p.Owner != caller || started != route || p.Subject != r.PathValue("subject")) {
		// Another caller's (or subject's) state: it stays usable by its
		// owner, so put it back.
		if err := a.cfg.Store.PutPending(r.Context(), p); err != nil {
			a.cfg.Log.Warn("restoring a started consent failed", zap.String("route", p.Route), zap.String("subject", p.Subject), zap.Error(err))
		}
		p = nil
	}
	if p == nil {
		writeErr(w, http.StatusBadRequest, "invalid_state", "unknown, used or expired state; start the consent again", route.Route())
		return
	}
	if err := route.CheckIssuer(req.Iss); err != nil {
		a.cfg.Log.Warn("authorization response refused", zap.String("route", route.Route()), zap.String("subject", p.Subject), zap.Error(err))
		writeErr(w, http.StatusBadRequest, "invalid_issuer", err.Error(), route.Route())
		return
	}
	c, err := route.Exchange(r.Context(), caller, p.Subject, req.Code, p.Verifier, p.RedirectURI)
	if err != nil {
		a.cfg.Log.Warn("consent code exchange failed", zap.String("route", route.Route()), zap.String("subject", p.Subject), zap.Error(err))
		writeErr(w, http.StatusBadGateway, "exchange_failed", err.Error(), route.Route())
		return
	}
	a.noteStored(route)
	writeJSON(w, http.StatusOK, statusOf(c))
}

// consentStatus is what the API shows of a consent: never a token.
type consentStatus struct {
	Route            string    `json:"route"`
	Subject          string    `json:"subject"`
	Status           string    `json:"status"`
	Cause            string    `json:"cause,omitempty"`
	Scopes           []string  `json:"scopes"`
	AccessExpiresAt  time.Time `json:"access_expires_at,omitzero"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at,omitzero"`
	CreatedAt        time.Time `json:"created_at"`
	LastRefreshAt    time.Time `json:"last_refresh_at,omitzero"`
}

func statusOf(c *consentstore.Consent) consentStatus {
	st := string(c.State)
	if c.State == consentstore.Refreshing {
		st = string(consentstore.Active)
	}
	return consentStatus{Route: c.Route, Subject: c.Subject, Status: st, Cause: c.Cause, Scopes: c.Scopes,
		AccessExpiresAt: c.AccessExpiry.UTC(), RefreshExpiresAt: c.RefreshExpiry.UTC(), CreatedAt: c.Created.UTC(), LastRefreshAt: c.Refreshed.UTC()}
}

func (a *API) get(ctx context.Context, w http.ResponseWriter, caller, subject string, route *AuthCode) *consentstore.Consent {
	c, err := route.cfg.Store.Get(ctx, consentstore.Key{Route: route.Route(), Owner: caller, Subject: subject})
	switch {
	case errors.Is(err, consentstore.ErrNotFound):
		writeErr(w, http.StatusNotFound, "consent_not_found", "no consent for this subject; start one with POST", route.Route())
	case err != nil:
		writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the consent store could not be read", route.Route())
	default:
		return c
	}
	return nil
}

func (a *API) status(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode) {
	if c := a.get(r.Context(), w, caller, r.PathValue("subject"), route); c != nil {
		writeJSON(w, http.StatusOK, statusOf(c))
	}
}

func (a *API) list(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode) {
	all, err := route.cfg.Store.List(r.Context(), consentstore.Filter{Route: route.Route(), Owner: caller})
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "store_unavailable", "the consent store could not be read", route.Route())
		return
	}
	out := make([]consentStatus, 0, len(all))
	for _, c := range all {
		out = append(out, statusOf(c))
	}
	writeJSON(w, http.StatusOK, map[string]any{"consents": out})
}

func (a *API) remove(w http.ResponseWriter, r *http.Request, caller string, route *AuthCode) {
	if a.get(r.Context(), w, caller, r.PathValue("subject"), route) == nil {
		return
	}
	if err := route.Revoke(r.Context(), caller, r.PathValue("subject")); err != nil {
		writeErr(w, http.StatusBadGateway, "revocation_failed", fmt.Sprint(err), route.Route())
		return
	}
	if a.cfg.Deleted != nil {
		a.cfg.Deleted(route.Route(), caller, r.PathValue("subject"))
	}
	w.WriteHeader(http.StatusNoContent)
}
