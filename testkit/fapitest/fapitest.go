// Package fapitest starts a real FAPI 2.0 authorization server and a
// resource server for Go tests: panva's OpenID-certified oidc-provider
// (Node.js) configured with the FAPI 2.0 Security Profile — pushed
// authorization requests required, PKCE S256, the iss authorization response
// parameter, private_key_jwt and tls_client_auth with PS256 and ES256 only,
// DPoP with server nonces and certificate-bound access tokens — and, in the
// same Node process, a resource server that verifies the JWT access tokens
// and their binding (a DPoP proof checked with the jose library, or the
// client certificate's x5t#S256).
//
//	srv := fapitest.Start(t, fapitest.Options{Clients: []fapitest.Client{{
//		ID: "tpp", AuthMethod: fapitest.PrivateKeyJWT, Keys: []crypto.PublicKey{key.Public()},
//		GrantTypes: []string{"client_credentials"}, DPoP: true, Scope: "accounts",
//	}}})
//	// token endpoint: srv.Issuer + "/token"; resource: srv.RSURL + "/accounts"
//	st := srv.Stats(t)
//
// Both servers speak HTTPS with certificates from srv.CA and request (do not
// require) client certificates from srv.CA. The Node packages come from
// testkit/nodetest. Node's output reaches the test log only when the test
// fails.
package fapitest

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/nodetest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

//go:embed server.mjs
var serverScript []byte

// Client authentication methods at the token and PAR endpoints.
const (
	PrivateKeyJWT = "private_key_jwt"
	TLSClientAuth = "tls_client_auth"
)

// Options configure the servers. The zero value starts them with no client.
type Options struct {
	// Clients are registered at the authorization server.
	Clients []Client
	// CA issues the servers' certificates and is the one trusted for client
	// certificates. Nil: a new CA.
	CA *pki.CA
	// AccessTokenTTL is the access tokens' lifetime, in whole seconds
	// (rounded up). Zero: 5 minutes.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is the refresh tokens' lifetime. Zero: 1 day.
	RefreshTokenTTL time.Duration
	// ASNonceRotation replaces oidc-provider's DPoP nonces (60 s windows,
	// five accepted) by one nonce that changes every ASNonceRotation; only the
	// current one is accepted. Zero keeps oidc-provider's.
	ASNonceRotation time.Duration
	// ASNonceOptional lets DPoP proofs at the authorization server go without
	// a nonce (by default one is required).
	ASNonceOptional bool
	// RSNonceRotation changes the resource server's DPoP nonce every
	// RSNonceRotation; only the current one is accepted. Zero: it changes
	// only on RotateNonces.
	RSNonceRotation time.Duration
	// RSNonceOptional lets DPoP proofs at the resource server go without a
	// nonce (by default one is required).
	RSNonceOptional bool
	// Scopes are the resource server's scopes. Nil: accounts, payments,
	// fundsconfirmations.
	Scopes []string
	// DPoPIatWindow is how far a DPoP proof's iat may be from the resource
	// server's clock. Zero: 60 s.
	DPoPIatWindow time.Duration
}

// Client is a client registered at the authorization server.
type Client struct {
	ID string
	// AuthMethod is PrivateKeyJWT or TLSClientAuth.
	AuthMethod string
	// Keys are the public keys of a private_key_jwt client (ECDSA P-256 or
	// RSA), registered as its jwks.
	Keys []crypto.PublicKey
	// SubjectDN is a tls_client_auth client's tls_client_auth_subject_dn, as
	// SubjectDN gives it for the client's certificate.
	SubjectDN string
	// RedirectURIs of an authorization_code client.
	RedirectURIs []string
	// GrantTypes: client_credentials, authorization_code, refresh_token.
	GrantTypes []string
	// DPoP makes the client's access tokens DPoP-bound
	// (dpop_bound_access_tokens: a token request without a proof fails).
	DPoP bool
	// CertificateBound makes the client's access tokens bound to its TLS
	// client certificate (tls_client_certificate_bound_access_tokens).
	CertificateBound bool
	// Scope is the space-separated list of scopes the client may ask for.
	Scope string
	// Metadata holds further client metadata, in oidc-provider's names; it
	// overrides the fields above.
	Metadata map[string]any
}

// SubjectDN is a certificate's subject as the authorization server matches
// tls_client_auth_subject_dn (RFC 4514, Go's pkix.Name.String), for simple
// names.
func SubjectDN(cert *x509.Certificate) string { return cert.Subject.String() }

func (c Client) metadata() (map[string]any, error) {
	m := map[string]any{
		"client_id":                                  c.ID,
		"token_endpoint_auth_method":                 c.AuthMethod,
		"grant_types":                                c.GrantTypes,
		"dpop_bound_access_tokens":                   c.DPoP,
		"tls_client_certificate_bound_access_tokens": c.CertificateBound,
		"id_token_signed_response_alg":               "PS256",
	}
	if c.Scope != "" {
		m["scope"] = c.Scope
	}
	if len(c.Keys) > 0 {
		keys := make([]map[string]any, 0, len(c.Keys))
		for _, k := range c.Keys {
			j, err := jws.JWK(k)
			if err != nil {
				return nil, fmt.Errorf("client %s: %w", c.ID, err)
			}
			keys = append(keys, j)
		}
		m["jwks"] = map[string]any{"keys": keys}
	}
	if c.SubjectDN != "" {
		m["tls_client_auth_subject_dn"] = c.SubjectDN
	}
	code := false
	for _, g := range c.GrantTypes {
		code = code || g == "authorization_code"
	}
	if code {
		m["response_types"] = []string{"code"}
		m["redirect_uris"] = c.RedirectURIs
	} else {
		m["response_types"] = []string{}
	}
	for k, v := range c.Metadata {
		m[k] = v
	}
	return m, nil
}

// Server is a running authorization server and resource server.
type Server struct {
	// Issuer is the authorization server's issuer identifier,
	// https://127.0.0.1:<port>; discovery is at
	// Issuer+"/.well-known/openid-configuration".
	Issuer string
	// RSURL is the resource server's base URL, https://127.0.0.1:<port>; any
	// path under it (say /accounts) is a protected resource, GET or POST.
	// It is also the access tokens' audience.
	RSURL string
	// AdminURL is the plain-HTTP admin endpoint (GET /stats, POST /reset,
	// POST /rotate-nonces).
	AdminURL string
	// CA issued the servers' certificates and is trusted for client
	// certificates: tests issue theirs with CA.IssueClient.
	CA *pki.CA
	// CAFile is CA's certificate as a PEM file.
	CAFile string

	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
	done  chan struct{}
	once  sync.Once
}

// Start starts the servers and stops them when the test ends. It fails the
// test when node or the packages are missing or the servers do not come up
// within 30 s.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	ca := opts.CA
	if ca == nil {
		var err error
		if ca, err = pki.NewCA("fapitest CA"); err != nil {
			t.Fatalf("fapitest: %v", err)
		}
	}
	srvCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("fapitest: server certificate: %v", err)
	}
	certPEM, keyPEM, err := pki.EncodePEM(srvCert)
	if err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	clients := make([]map[string]any, 0, len(opts.Clients))
	for _, c := range opts.Clients {
		m, err := c.metadata()
		if err != nil {
			t.Fatalf("fapitest: %v", err)
		}
		clients = append(clients, m)
	}
	scopes := opts.Scopes
	if scopes == nil {
		scopes = []string{"accounts", "payments", "fundsconfirmations"}
	}
	cfg := map[string]any{
		"tls":                  map[string]string{"cert": string(certPEM), "key": string(keyPEM), "ca": string(ca.Root().CertPEM())},
		"clients":              clients,
		"scopes":               scopes,
		"access_token_ttl":     seconds(opts.AccessTokenTTL, 5*time.Minute),
		"refresh_token_ttl":    seconds(opts.RefreshTokenTTL, 24*time.Hour),
		"as_nonce_rotation_ms": opts.ASNonceRotation.Milliseconds(),
		"as_require_nonce":     !opts.ASNonceOptional,
		"rs_nonce_rotation_ms": opts.RSNonceRotation.Milliseconds(),
		"rs_require_nonce":     !opts.RSNonceOptional,
		"dpop_iat_window":      seconds(opts.DPoPIatWindow, time.Minute),
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.Root().WriteCertFile(caFile); err != nil {
		t.Fatalf("fapitest: %v", err)
	}

	script := nodetest.Script(t, "fapi-server.mjs", serverScript)
	s := &Server{CA: ca, CAFile: caFile, out: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(nodetest.Node(t), script, cfgPath) //nolint:gosec // G204: node on PATH, the embedded script and its configuration file
	s.cmd.Stderr = s.out
	s.cmd.Env = quietEnv()
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("fapitest: starting node: %v", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, "fapitest-ready "); ok {
				ready <- rest
				continue
			}
			_, _ = s.out.Write([]byte(line + "\n"))
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("fapitest: node output:\n%s", s.Output())
		}
	})
	select {
	case line := <-ready:
		var addr struct{ Issuer, RS, Admin string }
		if err := json.Unmarshal([]byte(line), &addr); err != nil {
			t.Fatalf("fapitest: ready line %q: %v", line, err)
		}
		s.Issuer, s.RSURL, s.AdminURL = addr.Issuer, addr.RS, addr.Admin
	case <-s.done:
		t.Fatalf("fapitest: node exited before listening: %v\n%s", s.cmd.ProcessState, s.Output())
	case <-time.After(30 * time.Second):
		t.Fatalf("fapitest: node did not listen within 30s\n%s", s.Output())
	}
	return s
}

// quietEnv is the environment without the variables that turn on Node's or
// oidc-provider's debug output or change Node's options, so that what node
// prints is only what the script and oidc-provider's warnings print.
func quietEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name != "DEBUG" && name != "NODE_DEBUG" && name != "NODE_OPTIONS" {
			env = append(env, kv)
		}
	}
	return env
}

func seconds(d, def time.Duration) int64 {
	if d <= 0 {
		d = def
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Close stops the node process (closing its stdin, then killing it after
// 5 s). Start registers it with t.Cleanup; calling it again does nothing.
func (s *Server) Close() {
	s.once.Do(func() {
		_ = s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Output returns what node printed so far (its stderr, and stdout but the
// ready line). The servers never print a token.
func (s *Server) Output() string { return s.out.String() }

// CertPool returns a pool trusting the servers' certificates.
func (s *Server) CertPool() *x509.CertPool { return s.CA.CertPool() }

// HTTPClient returns a client trusting the servers and presenting cert as
// its TLS client certificate (nil: none). It does not follow redirects.
func (s *Server) HTTPClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: cfg, Proxy: nil},
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Stats are the servers' counters since start or the last ResetStats.
type Stats struct {
	// TokenRequests counts successful token requests by grant_type.
	TokenRequests map[string]int `json:"token_requests"`
	// TokenErrors counts failed token requests by OAuth error code.
	TokenErrors map[string]int `json:"token_errors"`
	// PARRequests counts successful pushed authorization requests.
	PARRequests int `json:"par_requests"`
	// PARErrors counts failed pushed authorization requests by error code.
	PARErrors map[string]int `json:"par_errors"`
	// AuthorizationErrors counts failed authorization requests by error.
	AuthorizationErrors map[string]int `json:"authorization_errors"`
	// ASNonceChallenges counts use_dpop_nonce answers of the AS.
	ASNonceChallenges int `json:"as_nonce_challenges"`
	// ASJTIRepeats counts DPoP proofs at the AS whose jti it had seen
	// before (since start; a correct client makes 0).
	ASJTIRepeats int `json:"as_jti_repeats"`
	// RSAccepted counts requests the resource server answered 200.
	RSAccepted int `json:"rs_accepted"`
	// RSRefused counts refused requests by reason (see Rejection).
	RSRefused map[string]int `json:"rs_refused"`
	// RSNonceChallenges counts use_dpop_nonce answers of the RS.
	RSNonceChallenges int `json:"rs_nonce_challenges"`
	// RSJTIRepeats counts DPoP proofs at the RS whose jti it had seen
	// before (since start; a correct client makes 0).
	RSJTIRepeats int `json:"rs_jti_repeats"`
	// Rejections lists every refusal, in order.
	Rejections []Rejection `json:"rejections"`
	// SecretHashes are the SHA-256 digests (base64url, unpadded) of every
	// access, refresh and ID token and authorization code the authorization
	// server issued and every DPoP proof either server received since start
	// (ResetStats keeps them), for leak checks: hash each token-like string
	// of a log and look it up.
	SecretHashes []string `json:"secret_hashes"`
}

// Rejection is one refused request.
type Rejection struct {
	// At is "as" or "rs".
	At string `json:"at"`
	// Endpoint is token, par or authorization at the AS, the path at the RS.
	Endpoint string `json:"endpoint"`
	// Reason is the OAuth error code at the AS (invalid_client,
	// use_dpop_nonce, invalid_dpop_proof, invalid_grant ...). At the RS:
	// missing_token, invalid_token, token_expired, unbound_token,
	// dpop_token_as_bearer, bearer_token_as_dpop, missing_dpop_proof,
	// invalid_dpop_proof, dpop_replay, dpop_htm_mismatch, dpop_htu_mismatch,
	// dpop_iat_out_of_window, dpop_ath_mismatch, dpop_key_mismatch,
	// use_dpop_nonce, missing_client_certificate,
	// untrusted_client_certificate, certificate_mismatch.
	Reason string `json:"reason"`
	// Detail says more (never a token).
	Detail string `json:"detail"`
	// ClientID is the client, when the AS knew it.
	ClientID string `json:"client_id"`
}

// Reasons returns the reasons of the rejections at "as" or "rs", in order.
func (st Stats) Reasons(at string) []string {
	var out []string
	for _, r := range st.Rejections {
		if r.At == at {
			out = append(out, r.Reason)
		}
	}
	return out
}

// Stats reads the counters.
func (s *Server) Stats(t testing.TB) Stats {
	t.Helper()
	var st Stats
	s.admin(t, http.MethodGet, "/stats", &st)
	return st
}

// ResetStats zeroes the counters and empties the rejection log (the jti
// sets and SecretHashes are kept).
func (s *Server) ResetStats(t testing.TB) {
	t.Helper()
	s.admin(t, http.MethodPost, "/reset", nil)
}

// RotateNonces changes the resource server's DPoP nonce now, and the
// authorization server's when Options.ASNonceRotation is set.
func (s *Server) RotateNonces(t testing.TB) {
	t.Helper()
	s.admin(t, http.MethodPost, "/rotate-nonces", nil)
}

func (s *Server) admin(t testing.TB, method, path string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.AdminURL+path, nil)
	if err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("fapitest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fapitest: %s %s: %d %v %s", method, path, resp.StatusCode, err, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("fapitest: %s %s: %v", method, path, err)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
