// Package discovery reads an authorization server's metadata (RFC 8414,
// OpenID Connect Discovery 1.0): where its endpoints are and what it
// supports, from the document published under its issuer identifier. The
// document's issuer must equal the configured one exactly (RFC 8414 §3.3),
// so a document served for another issuer is never used.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/tokenclient"
)

// Metadata is what tokenproxy takes from an authorization server's metadata.
type Metadata struct {
	// URL is where the document was read.
	URL    string `json:"-"`
	Issuer string `json:"issuer"`

	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	PAREndpoint           string `json:"pushed_authorization_request_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`

	TokenEndpointAuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthAlgs      []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	RequestObjectSigningAlgs   []string `json:"request_object_signing_alg_values_supported"`
	DPoPSigningAlgs            []string `json:"dpop_signing_alg_values_supported"`
	CodeChallengeMethods       []string `json:"code_challenge_methods_supported"`
	RequirePAR                 bool     `json:"require_pushed_authorization_requests"`
	IssParameterSupported      bool     `json:"authorization_response_iss_parameter_supported"`
	CertificateBoundTokens     bool     `json:"tls_client_certificate_bound_access_tokens"`
	RequireSignedRequestObject bool     `json:"require_signed_request_object"`
	// MTLSAliases are the endpoints to use when the client authenticates
	// with a certificate (RFC 8705 §5), by metadata name.
	MTLSAliases map[string]string `json:"mtls_endpoint_aliases"`
}

// Endpoint names, as in the metadata and its mtls_endpoint_aliases.
const (
	Authorization = "authorization_endpoint"
	Token         = "token_endpoint"
	PAR           = "pushed_authorization_request_endpoint"
	Revocation    = "revocation_endpoint"
)

// Endpoint returns the named endpoint: its mTLS alias when mtls is true and
// the server gives one, else the plain one; "" when the server has none.
func (m *Metadata) Endpoint(name string, mtls bool) string {
	if m == nil {
		return ""
	}
	if a := m.MTLSAliases[name]; mtls && a != "" {
		return a
	}
	switch name {
	case Authorization:
		return m.AuthorizationEndpoint
	case Token:
		return m.TokenEndpoint
	case PAR:
		return m.PAREndpoint
	case Revocation:
		return m.RevocationEndpoint
	}
	return ""
}

// Supports reports whether list names v, or is empty (the server did not say).
func Supports(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }

// maxDocument bounds a metadata document.
const maxDocument = 256 << 10

// Parse decodes a metadata document and checks it: a JSON object whose
// issuer equals issuer exactly, every endpoint an absolute https URL.
// Errors never quote the document.
func Parse(body []byte, issuer string) (*Metadata, error) {
	if len(body) > maxDocument {
		return nil, errors.New("the metadata document is larger than 256 KiB")
	}
	var m Metadata
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, errors.New("the metadata document is not a JSON object of the RFC 8414 fields")
	}
	if m.Issuer != issuer {
		if m.Issuer == "" {
			return nil, errors.New("the metadata document has no issuer")
		}
		return nil, fmt.Errorf("the metadata document names issuer %q, not the configured %q", clip(m.Issuer), issuer)
	}
	for _, e := range []struct{ name, v string }{{Authorization, m.AuthorizationEndpoint}, {Token, m.TokenEndpoint},
		{PAR, m.PAREndpoint}, {Revocation, m.RevocationEndpoint}} {
		if e.v != "" && !httpsURL(e.v) {
			return nil, fmt.Errorf("the metadata document's %s is not an absolute https URL", e.name)
		}
	}
	for k, v := range m.MTLSAliases {
		if !httpsURL(v) {
			return nil, fmt.Errorf("the metadata document's mtls_endpoint_aliases.%s is not an absolute https URL", clip(k))
		}
	}
	return &m, nil
}

func httpsURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil && u.Fragment == ""
}

// clip shortens a server-given string for a message and keeps only
// printable ASCII.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// URLs are where the metadata of issuer may be, in the order tried: RFC
// 8414 §3.1 (the well-known segment between host and path), the same
// segment appended to the issuer (as some servers publish it for an issuer
// with a path), then OpenID Connect Discovery's openid-configuration.
func URLs(issuer string) ([]string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("issuer %q must be an https URL with no query or fragment", issuer)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	base := u.Scheme + "://" + u.Host
	urls := []string{base + "/.well-known/oauth-authorization-server" + path}
	if path != "" {
		urls = append(urls, base+path+"/.well-known/oauth-authorization-server")
	}
	return append(urls, base+path+"/.well-known/openid-configuration"), nil
}

// NotFoundError says no metadata document was found under an issuer.
type NotFoundError struct {
	Issuer string
	Tried  []string
	Last   error
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no metadata for issuer %s at %s: %v", e.Issuer, strings.Join(e.Tried, ", "), e.Last)
}

func (e *NotFoundError) Unwrap() error { return e.Last }

// Fetch reads issuer's metadata over hc (the route's client: its trust
// roots and client certificate), trying each of URLs in turn until one
// answers 200. A document that does not check (Parse) ends the search.
func Fetch(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	urls, err := URLs(issuer)
	if err != nil {
		return nil, err
	}
	var last error
	for _, u := range urls {
		a, err := tokenclient.Do(ctx, hc, tokenclient.Request{Method: http.MethodGet, URL: u,
			Header: http.Header{"Accept": {"application/json"}}})
		switch {
		case err != nil:
			last = err
			continue
		case a.Status != http.StatusOK:
			last = fmt.Errorf("%s answered HTTP %d", u, a.Status)
			continue
		case a.TooLarge:
			return nil, fmt.Errorf("%s: the metadata document is larger than 1 MiB", u)
		}
		m, err := Parse(a.Body, issuer)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		m.URL = u
		return m, nil
	}
	return nil, &NotFoundError{Issuer: issuer, Tried: urls, Last: last}
}

// Source holds a route's current metadata and refreshes it. The document
// in use is swapped only for one that checked; a failed refresh keeps it.
type Source struct {
	issuer string
	client *http.Client
	cur    atomic.Pointer[Metadata]
}

// Open fetches issuer's metadata once: a Source only exists with a document.
func Open(ctx context.Context, hc *http.Client, issuer string) (*Source, error) {
	m, err := Fetch(ctx, hc, issuer)
	if err != nil {
		return nil, err
	}
	s := &Source{issuer: issuer, client: hc}
	s.cur.Store(m)
	return s, nil
}

// Static is a Source that always holds m (tests, and metadata given in code).
func Static(m *Metadata) *Source {
	s := &Source{issuer: m.Issuer}
	s.cur.Store(m)
	return s
}

// Current is the document in use.
func (s *Source) Current() *Metadata { return s.cur.Load() }

// Refresh fetches the document again and swaps it in when it checks.
func (s *Source) Refresh(ctx context.Context) error {
	if s.client == nil {
		return nil
	}
	m, err := Fetch(ctx, s.client, s.issuer)
	if err != nil {
		return err
	}
	s.cur.Store(m)
	return nil
}

// Run refreshes the document every interval until ctx ends; a failure is
// logged at Warn and the last good document stays in use.
func (s *Source) Run(ctx context.Context, route string, every time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := s.Refresh(rctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.Warn("refreshing the authorization server's metadata failed; the last good document stays in use",
					zap.String("route", route), zap.String("issuer", s.issuer), zap.Error(err))
			}
		}
	}
}
