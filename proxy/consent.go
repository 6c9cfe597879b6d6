package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"time"

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
	// CodeAccessFrequencyExceeded: the consent's unattended calls of the
	// bank day are spent (frequency_per_day); a 429 until the reset.
	CodeAccessFrequencyExceeded = "access_frequency_exceeded"
	// CodeAccessCountUnavailable: the count of unattended calls could not
	// be taken, so the call was not sent (a 503).
	CodeAccessCountUnavailable = "access_count_unavailable"
)

// accessError maps a call the route's access budget refused to the app's
// answer: 429 with the reset time when the day's calls are spent, 503 when
// the count could not be taken (never sent uncounted).
func accessError(err error) *apiError {
	var fe *route.FrequencyExceededError
	if errors.As(err, &fe) {
		return &apiError{Status: http.StatusTooManyRequests, Code: CodeAccessFrequencyExceeded, cause: err,
			RetryAfter: max(fe.RetryAfter, time.Second), reset: fe.Reset,
			Message: fmt.Sprintf("customer %s has made the %d unattended calls its consent allows per bank day on route %s; the bank refuses more. "+
				"The count resets at %s; attended calls (the customer present) still pass", fe.Subject, fe.Limit, fe.Route, fe.Reset.Format(time.RFC3339))}
	}
	return &apiError{Status: http.StatusServiceUnavailable, Code: CodeAccessCountUnavailable, cause: err, RetryAfter: time.Second,
		Message: "the count of the consent's unattended calls could not be taken (its store is unreachable); the call was not sent, since it might exceed the bank's daily limit; retry shortly"}
}

// tokenKey says which token a request on rt needs (route.TokenKey), with
// a missing or invalid subject answered 400.
func tokenKey(req *http.Request, rt *route.Route, caller string) (key string, use bool, aerr *apiError) {
	key, use, err := rt.TokenKey(req, caller)
	var se *route.SubjectError
	switch {
	case err == nil:
		return key, use, nil
	case errors.As(err, &se) && se.Missing:
		return "", false, &apiError{Status: http.StatusBadRequest, Code: CodeSubjectRequired,
			Message: "route " + rt.Name + " serves per-customer tokens: name the customer in the " + se.Header + " header"}
	case errors.As(err, &se):
		return "", false, &apiError{Status: http.StatusBadRequest, Code: CodeBadSubject, cause: err,
			Message: "the " + se.Header + " header is not a valid subject: 1 to 200 letters, digits and . _ - : @ + = ~"}
	}
	return "", false, &apiError{Status: http.StatusBadRequest, Code: CodeBadSubject, cause: err, Message: "the request names no valid subject"}
}

// routeTokenError maps a token error on rt to the app's answer: a missing
// or rejected consent is 401 consent_required naming the subject and how to
// start a consent, never the bank's 401.
func routeTokenError(rt *route.Route, err error) *apiError {
	var cr *tokencache.ConsentRequiredError
	var fe *tokencache.FetchError
	if errors.As(err, &fe) && fe.CredentialsRejected() && rt.TokenKind.OAuth() {
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

// bindConsents binds the consent API's listener when one is configured.
func bindConsents(o Options, bind func(name, addr string, h http.Handler) error) error {
	if o.Consents == nil {
		return nil
	}
	return bind("consents", o.ConsentAddr, o.Consents)
}
