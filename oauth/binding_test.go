package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/dpoptest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// cnfAS is a token endpoint over mTLS answering JWT access tokens (signed
// by its own key) whose cnf the test picks from what the request carried:
// the DPoP proof's key thumbprint (verified with go-jose) and the presented
// client certificate's x5t#S256.
type cnfAS struct {
	url    string
	client *http.Client

	mu   sync.Mutex
	cnf  func(proofJKT, certX5T string) map[string]string
	typ  string
	errs []string
}

func startCnfAS(t *testing.T) *cnfAS {
	t.Helper()
	ca, err := pki.NewCA("cnf test CA")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ca.IssueClient("tpp")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	as := &cnfAS{}
	var v dpoptest.Verifier
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		x5t := base64.RawURLEncoding.EncodeToString(sum[:])
		var jkt string
		if p := r.Header.Get("DPoP"); p != "" {
			pr, err := v.Verify(p, http.MethodPost, as.url+"/token", "", "")
			if err != nil {
				as.mu.Lock()
				as.errs = append(as.errs, err.Error())
				as.mu.Unlock()
				http.Error(w, `{"error":"invalid_dpop_proof"}`, http.StatusBadRequest)
				return
			}
			jkt = pr.JKT
		}
		as.mu.Lock()
		cnf, typ := as.cnf(jkt, x5t), as.typ
		as.mu.Unlock()
		at, err := jws.SignJSON(signer, jws.ES256, map[string]any{"typ": "at+jwt"}, map[string]any{
			"iss": as.url, "sub": "tpp", "client_id": "tpp", "exp": time.Now().Add(time.Hour).Unix(), "cnf": cnf})
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": typ, "expires_in": 3600})
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	as.url = srv.URL
	as.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.CertPool(), Certificates: []tls.Certificate{*cc}}}}
	return as
}

func (as *cnfAS) answer(typ string, cnf func(proofJKT, certX5T string) map[string]string) {
	as.mu.Lock()
	as.typ, as.cnf = typ, cnf
	as.mu.Unlock()
}

func (as *cnfAS) endpoint() Endpoint {
	return Endpoint{Route: "bank", TokenURL: as.url + "/token", Client: as.client, Auth: ClientAuth{Method: TLSClientAuth, ClientID: "tpp"}}
}

// A DPoP-bound JWT access token whose cnf jkt is the route's key's
// thumbprint is taken, bound to the key; one the bank bound to another key
// is refused with an error saying so (and is not returned to be cached).
func TestDPoPTokenCnfJKT(t *testing.T) {
	as := startCnfAS(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, err := dpop.New(key, "")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherJKT, _ := jws.Thumbprint(other.Public())
	ep := as.endpoint()
	ep.DPoP = dpop.NewClient(p)
	src, err := NewClientCredentials(ep, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	as.answer("DPoP", func(jkt, _ string) map[string]string { return map[string]string{"jkt": jkt} })
	tok, err := src.Fetch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Binding != "jkt:"+p.Thumbprint() || tok.Header != "DPoP "+tok.Value {
		t.Fatalf("binding %q, header scheme %q", tok.Binding, strings.Fields(tok.Header)[0])
	}

	as.answer("DPoP", func(string, string) map[string]string { return map[string]string{"jkt": otherJKT} })
	tok, err = src.Fetch(t.Context(), "")
	if err == nil || tok != nil {
		t.Fatalf("a token bound by the bank to another key was taken (binding %q)", tok.Binding)
	}
	if !strings.Contains(err.Error(), "bound the access token to another DPoP key") {
		t.Fatalf("err = %v", err)
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if len(as.errs) != 0 {
		t.Fatalf("proofs refused: %v", as.errs)
	}
}

// A certificate-bound JWT access token is bound to the certificate its cnf
// x5t#S256 names (the one the bank saw), not to the one the route believed
// it presented; an opaque token (no cnf) to the one presented.
func TestCertificateBoundTokenCnfX5T(t *testing.T) {
	as := startCnfAS(t)
	ep := as.endpoint()
	ep.CertBinding = func() string { return CertBindingPrefix + "last-known" }
	src, err := NewClientCredentials(ep, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var seen string
	as.answer("Bearer", func(_, x5t string) map[string]string { seen = x5t; return map[string]string{"x5t#S256": x5t} })
	tok, err := src.Fetch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	as.mu.Lock()
	want := CertBindingPrefix + seen
	as.mu.Unlock()
	if tok.Binding != want {
		t.Fatalf("binding %q, want the cnf's %q", tok.Binding, want)
	}

	// Opaque: the certificate presented.
	if got := cnfOf("opaque-token-value").X5T; got != "" {
		t.Fatalf("cnf of an opaque token: %q", got)
	}
	as.answer("Bearer", func(string, string) map[string]string { return nil })
	if tok, err = src.Fetch(t.Context(), ""); err != nil || tok.Binding != CertBindingPrefix+"last-known" {
		t.Fatalf("no cnf: binding %q, %v", tok.Binding, err)
	}
}
