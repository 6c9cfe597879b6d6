package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Error codes of per-customer (authorization_code) routes.
const (
	// CodeSubjectRequired: the route needs the customer named in its subject header.
	CodeSubjectRequired = "subject_required"
	// CodeBadSubject: the subject header holds a name that is not a valid subject.
	CodeBadSubject = "bad_subject"
	// CodeConsentRequired: the customer has no usable consent; start one with the consent API.
	CodeConsentRequired = "consent_required"
)

// tokenKey says which token a request on rt needs: the cache key of the
// subject the app names (oauth.SubjectKey of the gateway caller and the
// subject, so callers never share a customer), and whether a token is
// attached at all.
func tokenKey(req *http.Request, rt *route.Route, caller string) (key string, use bool, aerr *apiError) {
	if rt.Tokens == nil {
		return "", false, nil
	}
	hdr := rt.SubjectHeader()
	if hdr == "" {
		return "", true, nil
	}
	subject, named := rt.Subject(req)
	switch {
	case !named && rt.SubjectRequired():
		return "", false, &apiError{Status: http.StatusBadRequest, Code: CodeSubjectRequired,
			Message: "route " + rt.Name + " serves per-customer tokens: name the customer in the " + hdr + " header"}
	case !named:
		return "", false, nil
	}
	if err := consentstore.ValidateKey(consentstore.Key{Route: rt.Name, Owner: caller, Subject: subject}); err != nil {
		return "", false, &apiError{Status: http.StatusBadRequest, Code: CodeBadSubject, cause: err,
			Message: "the " + hdr + " header is not a valid subject: 1 to 200 letters, digits and . _ - : @ + = ~"}
	}
	return oauth.SubjectKey(caller, subject), true, nil
}

// routeTokenError maps a token error on rt to the app's answer: a missing
// or rejected consent is 401 consent_required naming the subject and how to
// start a consent, never the bank's 401.
func routeTokenError(rt *route.Route, err error) *apiError {
	var cr *tokencache.ConsentRequiredError
	var fe *tokencache.FetchError
	if errors.As(err, &fe) && fe.CredentialsRejected() && isOAuth(rt) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeTokenRejected, cause: err,
			Message: "the provider's token endpoint rejected the route's OAuth2 client authentication (client_id, secret, key or certificate); an operator must fix the route's credentials"}
	}
	if !errors.As(err, &cr) {
		return tokenError(err)
	}
	msg := "customer " + cr.Subject + " has no usable consent on route " + rt.Name
	if cr.Cause != "" {
		msg += " (" + cr.Cause + ")"
	}
	msg += "; start one on the consent API: POST /v1/routes/" + rt.Name + "/consents/" + cr.Subject
	return &apiError{Status: http.StatusUnauthorized, Code: CodeConsentRequired, Message: msg, cause: err}
}

// isOAuth reports whether rt's token comes from an OAuth2 grant.
func isOAuth(rt *route.Route) bool {
	switch rt.Tokens.Source().(type) {
	case *oauth.AuthCode, *oauth.ClientCredentials:
		return true
	}
	return false
}

// NewConsentHandler returns the consent API (oauth.NewAPI) for cfg, with
// callers authenticated exactly as the proxy does: by the allow policy of
// the route the path names (gateway callers in Proxy-Authorization or, for a
// plain API client, Authorization: Basic; source CIDRs). A deleted consent's
// cached token is dropped at once.
func NewConsentHandler(routes []*route.Route, cfg oauth.APIConfig) (http.Handler, error) {
	byName := map[string]*route.Route{}
	for _, r := range routes {
		byName[r.Name] = r
	}
	authenticate := func(req *http.Request) (string, error) {
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
	cfg.Authenticate = authenticate
	api, err := oauth.NewAPI(cfg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.HandleFunc("DELETE /v1/routes/{route}/consents/{subject}", func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		api.ServeHTTP(sw, req)
		if sw.status != http.StatusNoContent {
			return
		}
		if rt := byName[req.PathValue("route")]; rt != nil && rt.Tokens != nil {
			if caller, err := authenticate(req); err == nil {
				rt.Tokens.Forget(oauth.SubjectKey(caller, req.PathValue("subject")))
			}
		}
	})
	return mux, nil
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// bindConsents binds the consent API's listener when one is configured.
func bindConsents(o Options, bind func(name, addr string, h http.Handler) error) error {
	if o.Consents == nil {
		return nil
	}
	return bind("consents", o.ConsentAddr, o.Consents)
}
