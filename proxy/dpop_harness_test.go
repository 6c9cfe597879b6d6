package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/dpoptest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// dpopBank is an authorization server (POST /token, client_credentials over
// mTLS) and a resource server (GET /v1/accounts) that check DPoP proofs
// with go-jose (dpoptest) and certificate-bound tokens by the presented
// client certificate, as a FAPI 2.0 bank does.
type dpopBank struct {
	t   testing.TB
	srv *httptest.Server
	ca  *pki.CA
	dir string
	// caFile trusts the bank; certFile and keyFile are the client's QWAC.
	caFile, certFile, keyFile string

	v dpoptest.Verifier
	// dpop: proofs are required and tokens are DPoP-bound; else tokens
	// are bound to the client certificate.
	dpop bool
	// bearer makes the token endpoint answer token_type Bearer.
	bearer atomic.Bool
	// ttl is the next tokens' expires_in, in seconds.
	ttl atomic.Int64
	// nonceEvery, when set, makes both servers want a nonce that changes
	// this often ("as-…" and "rs-…").
	nonceEvery time.Duration

	mu              sync.Mutex
	issued          map[string]issuedToken
	tokenRequests   int
	asNonceRefused  int
	asRefusedNonces []string            // the nonce of each token request refused for it
	rsNonceRefused  map[string][]string // X-Test-Req → the nonces refused to that app request
	bindRefused     int                 // a token presented with another key or certificate
	proofRefused    []string            // proofs refused for another reason than the nonce
	served          map[string]int      // "<token>|<cert>" of each request served
}

type issuedToken struct{ jkt, x5t string }

func newDPoPBank(t testing.TB, dpop bool) *dpopBank {
	t.Helper()
	ca, err := pki.NewCA("FAPI bank test CA")
	if err != nil {
		t.Fatal(err)
	}
	b := &dpopBank{t: t, ca: ca, dir: t.TempDir(), dpop: dpop, issued: map[string]issuedToken{},
		rsNonceRefused: map[string][]string{}, served: map[string]int{}}
	b.ttl.Store(300)
	b.caFile = filepath.Join(b.dir, "ca.pem")
	if err := ca.WriteCertFile(b.caFile); err != nil {
		t.Fatal(err)
	}
	b.rotateClientCert()
	b.srv = mtlsUpstream(t, ca, http.HandlerFunc(b.serve))
	return b
}

// rotateClientCert writes a new client certificate over the files (key
// first, then the certificate, each atomically).
func (b *dpopBank) rotateClientCert() {
	c, err := b.ca.IssueClient("TPP QWAC " + strconv.FormatInt(time.Now().UnixNano(), 10))
	if err != nil {
		b.t.Fatal(err)
	}
	f, err := pki.WriteFiles(b.dir, "qwac", c, "")
	if err != nil {
		b.t.Fatal(err)
	}
	b.certFile, b.keyFile = f.Cert, f.Key
}

// x5t is the RFC 8705 thumbprint of a DER certificate.
func x5t(der []byte) string {
	s := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(s[:])
}

func (b *dpopBank) nonce(kind string) string {
	if b.nonceEvery == 0 {
		return ""
	}
	return kind + "-" + strconv.FormatInt(time.Now().UnixNano()/int64(b.nonceEvery), 10)
}

func (b *dpopBank) serve(w http.ResponseWriter, r *http.Request) {
	cert := x5t(r.TLS.PeerCertificates[0].Raw)
	switch r.URL.Path {
	case "/token":
		b.token(w, r, cert)
	case "/v1/accounts":
		b.resource(w, r, cert)
	default:
		http.NotFound(w, r)
	}
}

func (b *dpopBank) token(w http.ResponseWriter, r *http.Request, cert string) {
	w.Header().Set("Content-Type", "application/json")
	b.mu.Lock()
	b.tokenRequests++
	b.mu.Unlock()
	if r.Method != http.MethodPost || r.FormValue("grant_type") != "client_credentials" {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		return
	}
	it := issuedToken{x5t: cert}
	if b.dpop {
		want := b.nonce("as")
		p, err := b.v.Verify(r.Header.Get("DPoP"), http.MethodPost, b.srv.URL+"/token", "", want)
		switch {
		case errors.Is(err, dpoptest.ErrNonce):
			b.mu.Lock()
			b.asNonceRefused++
			b.asRefusedNonces = append(b.asRefusedNonces, p.Nonce)
			b.mu.Unlock()
			w.Header().Set("DPoP-Nonce", want)
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}`))
			return
		case err != nil:
			b.refuseProof(err)
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_dpop_proof"}`))
			return
		}
		it.jkt = p.JKT
		if want != "" {
			w.Header().Set("DPoP-Nonce", want)
		}
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := "at-" + hex.EncodeToString(raw[:])
	b.mu.Lock()
	b.issued[tok] = it
	b.mu.Unlock()
	typ := "DPoP"
	if !b.dpop || b.bearer.Load() {
		typ = "Bearer"
	}
	_, _ = fmt.Fprintf(w, `{"access_token":%q,"token_type":%q,"expires_in":%d}`, tok, typ, b.ttl.Load())
}

func (b *dpopBank) refuseProof(err error) {
	b.mu.Lock()
	b.proofRefused = append(b.proofRefused, err.Error())
	b.mu.Unlock()
}

func (b *dpopBank) resource(w http.ResponseWriter, r *http.Request, cert string) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	b.mu.Lock()
	it, ok := b.issued[tok]
	b.mu.Unlock()
	unauthorized := func(challenge string) {
		w.Header().Set("WWW-Authenticate", challenge)
		w.WriteHeader(http.StatusUnauthorized)
	}
	switch {
	case !ok:
		unauthorized(scheme + ` error="invalid_token"`)
		return
	case b.dpop && scheme != "DPoP", !b.dpop && scheme != "Bearer":
		b.refuseProof(errors.New("scheme " + scheme))
		unauthorized(`DPoP error="invalid_token"`)
		return
	}
	if b.dpop {
		want := b.nonce("rs")
		if want != "" {
			w.Header().Set("DPoP-Nonce", want)
		}
		p, err := b.v.Verify(r.Header.Get("DPoP"), r.Method, b.srv.URL+r.URL.Path, tok, want)
		switch {
		case errors.Is(err, dpoptest.ErrNonce):
			b.mu.Lock()
			id := r.Header.Get("X-Test-Req")
			b.rsNonceRefused[id] = append(b.rsNonceRefused[id], p.Nonce)
			b.mu.Unlock()
			unauthorized(`DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
			return
		case err != nil:
			b.refuseProof(err)
			unauthorized(`DPoP error="invalid_dpop_proof"`)
			return
		case p.JKT != it.jkt:
			b.mu.Lock()
			b.bindRefused++
			b.mu.Unlock()
			unauthorized(`DPoP error="invalid_token"`)
			return
		}
	} else if cert != it.x5t {
		b.mu.Lock()
		b.bindRefused++
		b.mu.Unlock()
		unauthorized(`Bearer error="invalid_token", error_description="certificate mismatch"`)
		return
	}
	b.mu.Lock()
	b.served[tok+"|"+cert]++
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"accounts":[]}`))
}

func (b *dpopBank) counts() (tokens, bind int, refused []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokenRequests, b.bindRefused, append([]string(nil), b.proofRefused...)
}

// tokens returns every access token issued (the log must hold none).
func (b *dpopBank) tokens() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.issued))
	for k := range b.issued {
		out = append(out, k)
	}
	return out
}

// routeYAML is the route to the bank: client_credentials over mTLS
// (tls_client_auth) with token (extra token: lines, indented 6).
func (b *dpopBank) routeYAML(name, token string) string {
	return fmt.Sprintf(`
  - name: %s
    hosts: [%s.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}, reload_interval: 20ms}
    token:
      type: client_credentials
      url: %s/token
      client_id: fapi-client
      auth_method: tls_client_auth
      rate_limit: {requests_per_minute: 6000, burst: 100}
%s`, name, name, b.srv.URL, b.caFile, b.certFile, b.keyFile, b.srv.URL, token)
}

// writeECKey writes a new P-256 key as PKCS#8 PEM and returns its path.
func writeECKey(t testing.TB, dir, name string) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = tls.VersionTLS13

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
