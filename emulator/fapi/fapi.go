// Package fapi emulates a FAPI 2.0 bank (Security Profile, final): an
// authorization server with metadata (RFC 8414), pushed authorization
// requests (RFC 9126, required), the iss authorization-response parameter
// (RFC 9207), PKCE S256, client authentication by private_key_jwt (PS256 or
// ES256, audience the issuer) or tls_client_auth, and sender-constrained
// access tokens: DPoP-bound (RFC 9449, with server nonces that rotate) or
// bound to the client certificate (RFC 8705); and a resource server that
// verifies them on every request. It verifies with go-jose, an
// implementation independent of the one tokenproxy signs with.
//
// It serves the demo and Go tests; the interoperability tests also run
// tokenproxy against oidc-provider, a certified authorization server.
package fapi

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Config describes the emulated bank.
type Config struct {
	// Clients are the registered clients, by client_id.
	Clients map[string]Client
	// AccessTTL is the access tokens' lifetime (default 5 minutes).
	AccessTTL time.Duration
	// NonceEvery makes the authorization server and the resource server
	// demand DPoP nonces, each rotating its nonce this often (the current
	// and the previous nonce are accepted). Zero: no nonce is demanded.
	NonceEvery time.Duration
	// NoPAR: the bank has no PAR endpoint (for refusal tests).
	NoPAR bool
	// Now is the bank's clock (default time.Now).
	Now func() time.Time
}

// Client is a registered client.
type Client struct {
	// Method is private_key_jwt or tls_client_auth.
	Method string
	// Key verifies private_key_jwt assertions and signed request objects
	// (an ECDSA P-256 or RSA public key).
	Key crypto.PublicKey
	// CertSubject is the client certificate's common name (tls_client_auth).
	CertSubject string
	// RedirectURIs are the registered redirect URIs.
	RedirectURIs []string
	// DPoP: access tokens must be DPoP-bound; token requests need a proof.
	DPoP bool
	// CertificateBound: access tokens are bound to the client certificate.
	CertificateBound bool
}

// Stats are the bank's counters.
type Stats struct {
	// TokenRequests by grant type, counting refused ones.
	TokenRequests map[string]int
	PARRequests   int
	// NonceChallenges counts use_dpop_nonce answers: "as" and "rs".
	NonceChallenges map[string]int
	// Accepted resource requests; Refused by reason.
	Accepted int
	Refused  map[string]int
	// JTIReplays counts DPoP proofs refused for a jti seen before.
	JTIReplays int
	// DPoPJKTExchanges counts codes exchanged whose pushed request named
	// dpop_jkt, with a proof by the key of that thumbprint.
	DPoPJKTExchanges int
}

// Server is the emulated bank's http.Handler.
type Server struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	issuer   string
	requests map[string]*pushed // request_uri → pushed request
	codes    map[string]*grant
	refresh  map[string]*grant
	access   map[string]*accessToken
	jtis     map[string]time.Time // client assertions and DPoP proofs seen
	nonces   map[string]*nonce    // "as", "rs"
	stats    Stats
	issued   []string
	mux      *http.ServeMux
}

type pushed struct {
	client  string
	params  map[string]string
	expires time.Time
}

type grant struct {
	client, psu, scope, redirect, challenge, jkt string
	expires                                      time.Time
	used                                         bool
}

type accessToken struct {
	client, psu, scope string
	jkt, x5t           string
	expires            time.Time
}

type nonce struct {
	cur, prev string
	at        time.Time
}

// New returns the bank. SetIssuer must be called with the URL it is served
// at before it answers.
func New(cfg Config) *Server {
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = 5 * time.Minute
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{cfg: cfg, now: now, requests: map[string]*pushed{}, codes: map[string]*grant{},
		refresh: map[string]*grant{}, access: map[string]*accessToken{}, jtis: map[string]time.Time{},
		nonces: map[string]*nonce{},
		stats:  Stats{TokenRequests: map[string]int{}, NonceChallenges: map[string]int{}, Refused: map[string]int{}}}
	m := http.NewServeMux()
	m.HandleFunc("GET /.well-known/oauth-authorization-server", s.metadata)
	m.HandleFunc("GET /.well-known/openid-configuration", s.metadata)
	if !cfg.NoPAR {
		m.HandleFunc("POST /par", s.par)
	}
	m.HandleFunc("GET /authorize", s.authorize)
	m.HandleFunc("POST /token", s.token)
	m.HandleFunc("/accounts", s.resource)
	m.HandleFunc("/payments", s.resource)
	s.mux = m
	return s
}

// SetIssuer sets the issuer identifier, the https URL the bank is served at.
func (s *Server) SetIssuer(u string) { s.mu.Lock(); s.issuer = u; s.mu.Unlock() }

// Issuer is the issuer identifier.
func (s *Server) Issuer() string { s.mu.Lock(); defer s.mu.Unlock(); return s.issuer }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.stats
	c.TokenRequests = cloneMap(s.stats.TokenRequests)
	c.NonceChallenges = cloneMap(s.stats.NonceChallenges)
	c.Refused = cloneMap(s.stats.Refused)
	return c
}

// Issued returns every code, access and refresh token the bank issued, for
// leak checks.
func (s *Server) Issued() []string { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.issued) }

func cloneMap(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (s *Server) metadata(w http.ResponseWriter, _ *http.Request) {
	iss := s.Issuer()
	md := map[string]any{
		"issuer":                                           iss,
		"authorization_endpoint":                           iss + "/authorize",
		"token_endpoint":                                   iss + "/token",
		"response_types_supported":                         []string{"code"},
		"grant_types_supported":                            []string{"authorization_code", "refresh_token", "client_credentials"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt", "tls_client_auth"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"PS256", "ES256"},
		"dpop_signing_alg_values_supported":                []string{"PS256", "ES256"},
		"authorization_response_iss_parameter_supported":   true,
		"tls_client_certificate_bound_access_tokens":       true,
	}
	if !s.cfg.NoPAR {
		md["pushed_authorization_request_endpoint"] = iss + "/par"
		md["require_pushed_authorization_requests"] = true
		md["request_object_signing_alg_values_supported"] = []string{"PS256", "ES256"}
	}
	writeJSON(w, http.StatusOK, md)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// oauthError answers an RFC 6749 error.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func random() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func s256(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// currentNonce returns the nonce of server ("as" or "rs"), rotating it when
// due. Caller holds s.mu.
func (s *Server) currentNonce(server string) *nonce {
	n := s.nonces[server]
	now := s.now()
	if n == nil {
		n = &nonce{cur: random(), at: now}
		s.nonces[server] = n
	}
	if s.cfg.NonceEvery > 0 && now.Sub(n.at) >= s.cfg.NonceEvery {
		n.prev, n.cur, n.at = n.cur, random(), now
	}
	return n
}

// validNonce reports whether v is server's current or previous nonce.
// Caller holds s.mu.
func (s *Server) validNonce(server, v string) bool {
	n := s.currentNonce(server)
	return v != "" && (v == n.cur || v == n.prev)
}

// seenJTI records a jti and reports whether it was seen within the last
// ten minutes. Caller holds s.mu.
func (s *Server) seenJTI(jti string) bool {
	now := s.now()
	if t, ok := s.jtis[jti]; ok && now.Sub(t) < 10*time.Minute {
		return true
	}
	if len(s.jtis) > 100000 {
		for k, t := range s.jtis {
			if now.Sub(t) >= 10*time.Minute {
				delete(s.jtis, k)
			}
		}
	}
	s.jtis[jti] = now
	return false
}
