package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Error codes sent in the X-Tokenproxy-Error header and the JSON body, so an
// app can tell tokenproxy's own answers from the upstream's.
const (
	CodeNoRoute            = "no_route"
	CodeConnectRefused     = "connect_refused"
	CodeConnectPortRefused = "connect_port_refused"
	CodeNotProxyRequest    = "not_a_proxy_request"
	CodeBodyTooLarge       = "body_too_large"
	CodeBadRequest         = "bad_request"
	CodeTokenThrottled     = "token_throttled"
	CodeTokenRejected      = "token_credentials_rejected" //nolint:gosec // an error code, not a credential
	CodeTokenForbidden     = "token_forbidden"
	CodeTokenUnavailable   = "token_unavailable" //nolint:gosec // an error code, not a credential
	CodeNoCredentials      = "credentials_unavailable"
	CodeSigningFailed      = "signing_failed"
	CodeMissingHeader      = "missing_signed_header"
	CodeSigningUnavailable = "signing_key_unavailable"
	CodeUpstreamTimeout    = "upstream_timeout"
	CodeUpstreamUntrusted  = "upstream_certificate_untrusted"
	CodeClientCertRefused  = "client_certificate_rejected"
	CodeUpstreamTLS        = "upstream_tls_failed"
	CodeUpstreamDial       = "upstream_unreachable"
	CodeUpstreamFailed     = "upstream_failed"
	// CodeUpstreamHeaderTooLarge: the upstream's response header block
	// exceeded route.MaxResponseHeaderBytes (a 502).
	CodeUpstreamHeaderTooLarge = "upstream_header_too_large"
	// CodeUpstreamBodyBroken is logged, never sent: the upstream's body
	// ended early (cut, reset) and the app's connection was aborted.
	CodeUpstreamBodyBroken = "upstream_body_broken"
	// CodeUpstreamAmbiguousFraming is logged, never sent: the upstream's
	// answer carried both Content-Length and Transfer-Encoding; it was
	// framed by Transfer-Encoding and its connection closed.
	CodeUpstreamAmbiguousFraming = "upstream_ambiguous_framing"
	CodeShuttingDown             = "shutting_down"
	CodeCallerAuthRequired       = route.CodeCallerAuthRequired
	CodeCallerNotAllowed         = route.CodeCallerNotAllowed
)

// HeaderError names tokenproxy's own error responses.
const HeaderError = "X-Tokenproxy-Error"

// apiError is an answer tokenproxy gives itself instead of the upstream's.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
	headers    map[string]string
	reset      time.Time // when set, sent as "reset" (RFC 3339)
	cause      error     // logged, never sent
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Route   string `json:"route,omitempty"`
	// Reset is when a refused budget resets (RFC 3339), for access_frequency_exceeded.
	Reset string `json:"reset,omitempty"`
}

// response renders the error as the JSON response the app receives.
func (e *apiError) response(req *http.Request, route string) *http.Response {
	eb := errorBody{Error: e.Code, Message: e.Message, Route: route}
	if !e.reset.IsZero() {
		eb.Reset = e.reset.Format(time.RFC3339)
	}
	body, _ := json.Marshal(eb)
	body = append(body, '\n')
	h := http.Header{
		"Content-Type":           {"application/json"},
		"Cache-Control":          {"no-store"},
		"X-Content-Type-Options": {"nosniff"},
		HeaderError:              {e.Code},
		"Content-Length":         {strconv.Itoa(len(body))},
	}
	for k, v := range e.headers {
		h.Set(k, v)
	}
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	if e.Status == http.StatusServiceUnavailable && e.RetryAfter == 0 && e.Code != CodeTokenRejected && e.Code != CodeTokenForbidden {
		h.Set("Retry-After", "1")
	}
	return &http.Response{
		Status:        strconv.Itoa(e.Status) + " " + http.StatusText(e.Status),
		StatusCode:    e.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          &wholeBody{b: body},
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// tokenError maps a token cache error to the app's answer.
func tokenError(err error) *apiError {
	var te *tokencache.ThrottledError
	var fe *tokencache.FetchError
	switch {
	case errors.As(err, &te):
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeTokenThrottled, RetryAfter: te.RetryAfter, cause: err,
			Message: "no access token is available right now (" + te.Reason + "); retry after the Retry-After delay"}
	case errors.As(err, &fe) && fe.CredentialsRejected():
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeTokenRejected, cause: err,
			Message: "the provider's token endpoint rejected the configured username or password; an operator must fix the route's credentials"}
	case errors.As(err, &fe) && fe.Forbidden():
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeTokenForbidden, cause: err,
			Message: "the provider's token endpoint refused this client (HTTP 403); the egress IP is probably not whitelisted"}
	default:
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeTokenUnavailable, cause: err,
			Message: "the access token could not be obtained from the provider; see tokenproxy's log for the cause"}
	}
}

// upstreamError maps a failed round trip to the app's answer.
func upstreamError(err error) *apiError {
	// net/http's error for MaxResponseHeaderBytes has no type of its own.
	if strings.Contains(err.Error(), "server response headers exceeded") {
		return &apiError{Status: http.StatusBadGateway, Code: CodeUpstreamHeaderTooLarge, cause: err,
			Message: fmt.Sprintf("the upstream's response headers exceeded %d KiB", route.MaxResponseHeaderBytes>>10)}
	}
	switch problem.Classify(err) {
	case problem.Untrusted:
		return &apiError{Status: http.StatusBadGateway, Code: CodeUpstreamUntrusted, cause: err,
			Message: "tokenproxy does not trust the upstream's TLS certificate; check the route's tls.ca_file and tls.server_name"}
	case problem.ClientCertRefused:
		return &apiError{Status: http.StatusBadGateway, Code: CodeClientCertRefused, cause: err,
			Message: "the upstream rejected tokenproxy's client certificate during the TLS handshake; check that the route's certificate is the one the provider issued and is still valid"}
	case problem.HandshakeFailed:
		return &apiError{Status: http.StatusBadGateway, Code: CodeUpstreamTLS, cause: err,
			Message: "the TLS handshake with the upstream failed"}
	case problem.NameNotFound, problem.Unreachable:
		return &apiError{Status: http.StatusBadGateway, Code: CodeUpstreamDial, cause: err,
			Message: "tokenproxy could not connect to the upstream"}
	case problem.Timeout:
		return &apiError{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, cause: err,
			Message: "the upstream did not answer in time"}
	default:
		return &apiError{Status: http.StatusBadGateway, Code: CodeUpstreamFailed, cause: err,
			Message: "the exchange with the upstream failed"}
	}
}

// signingError maps a request the route could not sign to the app's answer.
func signingError(err error) *apiError {
	var se *route.SigningError
	switch {
	case errors.As(err, &se) && se.Unavailable:
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeSigningUnavailable, cause: err, RetryAfter: time.Second,
			Message: "the signing key is held in Vault, which cannot be reached right now; retry shortly"}
	case errors.As(err, &se) && se.MissingHeader:
		return &apiError{Status: http.StatusBadRequest, Code: CodeMissingHeader, cause: err,
			Message: "the request lacks a header the route's signature must cover: " + se.Err.Error()}
	default:
		return &apiError{Status: http.StatusInternalServerError, Code: CodeSigningFailed, cause: err,
			Message: "tokenproxy could not sign the request; see its log"}
	}
}

// deniedError maps a refusal of the route's allow policy to the app's answer.
func deniedError(d *route.Denied) *apiError {
	e := &apiError{Status: d.Status, Code: d.Code, Message: d.Message}
	if d.Challenge != "" {
		e.headers = map[string]string{"Proxy-Authenticate": d.Challenge}
	}
	return e
}

// wholeBody is a body held in memory. Its last read also returns io.EOF, so
// writeResponse sends it whole, without a flush of its own.
type wholeBody struct{ b []byte }

func (r *wholeBody) Read(p []byte) (int, error) {
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (r *wholeBody) Close() error { return nil }
