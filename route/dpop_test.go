package route

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// TestNonceRetryProvesWithTheDemandedNonce: the request sent again after a
// resource server's use_dpop_nonce carries the nonce that answer demanded,
// even when another answer (a slower one, from before the server's nonce
// changed) set the origin's nonce back meanwhile; otherwise the retry
// carries a refused nonce again.
func TestNonceRetryProvesWithTheDemandedNonce(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dpop.New(key, "ES256")
	if err != nil {
		t.Fatal(err)
	}
	cl := dpop.NewClient(p)
	r := &Route{Name: "r", Upstream: &url.URL{Scheme: "https", Host: "rs.example"}, DPoP: cl, TokenKind: TokenClientCredentials}
	tok := &tokencache.Token{Value: "tok", Type: "DPoP", Header: "DPoP tok", Binding: p.Binding()}
	in := httptest.NewRequest(http.MethodGet, "http://rs.example/accounts", nil)

	// hdr is an answer's header with the given DPoP-Nonce (canonical key).
	hdr := func(nonce string, kv ...string) http.Header {
		h := http.Header{}
		h.Set(dpop.HeaderNonce, nonce)
		for i := 0; i+1 < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	cl.Observe("https://rs.example/accounts", hdr("n1"))
	first, err := r.Prepare(in, nil, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := dpop.NonceOf(first.Header.Get(dpop.HeaderProof)); got != "n1" {
		t.Fatalf("first proof's nonce %q, want n1", got)
	}
	refusal := &http.Response{StatusCode: http.StatusUnauthorized, Request: first, Header: hdr("n2", "WWW-Authenticate", `DPoP error="use_dpop_nonce"`)}
	nonce, retry := r.NonceRetry(refusal)
	if !retry || nonce != "n2" {
		t.Fatalf("NonceRetry = %q, %v; want n2, true", nonce, retry)
	}
	if refusal.Header.Get(dpop.HeaderNonce) != "" {
		t.Fatal("the resource server's nonce would reach the app")
	}
	// A slower answer carrying the nonce before the change arrives now.
	cl.Observe("https://rs.example/accounts", hdr("n1"))
	again, err := r.Prepare(in.WithContext(WithNonce(in.Context(), nonce)), nil, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := dpop.NonceOf(again.Header.Get(dpop.HeaderProof)); got != "n2" {
		t.Fatalf("the retry's proof carries nonce %q, want the demanded n2", got)
	}
	// Not retried: a refusal naming the nonce the proof already carried,
	// and an answer that is not a nonce refusal.
	if _, retry := r.NonceRetry(&http.Response{StatusCode: http.StatusUnauthorized, Request: again, Header: hdr("n2", "WWW-Authenticate", `DPoP error="use_dpop_nonce"`)}); retry {
		t.Fatal("retried with the nonce the refused proof carried")
	}
	if _, retry := r.NonceRetry(&http.Response{StatusCode: http.StatusOK, Request: again, Header: hdr("n3")}); retry {
		t.Fatal("a 200 retried")
	}
}
