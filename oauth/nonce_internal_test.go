package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"testing"

	"github.com/tokenproxy/tokenproxy/dpop"
)

// TestTokenRequestRetryProvesWithTheDemandedNonce: a token request sent
// again after use_dpop_nonce carries the nonce that answer demanded, even
// when another answer set the origin's nonce back meanwhile.
func TestTokenRequestRetryProvesWithTheDemandedNonce(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := dpop.New(key, "ES256")
	if err != nil {
		t.Fatal(err)
	}
	e := &Endpoint{Route: "r", DPoP: dpop.NewClient(p)}
	const tokenURL = "https://as.example/token"
	answer := func(nonce string) http.Header {
		h := http.Header{}
		h.Set(dpop.HeaderNonce, nonce)
		return h
	}
	refused := &endpointError{Route: "r", Endpoint: "token", Status: http.StatusBadRequest, Code: dpop.ErrUseNonce}

	demanded, retry := e.retryWithNonce(tokenURL, 0, "", answer("n2"), refused)
	if !retry || demanded != "n2" {
		t.Fatalf("retryWithNonce = %q, %v; want n2, true", demanded, retry)
	}
	e.DPoP.Observe(tokenURL, answer("n1")) // an older answer arrives now
	hdr := http.Header{}
	sent, err := e.proveTokenRequest(tokenURL, demanded, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if got := dpop.NonceOf(hdr.Get(dpop.HeaderProof)); sent != "n2" || got != "n2" {
		t.Fatalf("the retry carries nonce %q (reported %q), want the demanded n2", got, sent)
	}
	if _, retry := e.retryWithNonce(tokenURL, 1, "n2", answer("n2"), refused); retry {
		t.Fatal("sent again with the nonce the refused request carried")
	}
	if _, retry := e.retryWithNonce(tokenURL, dpop.MaxNonceRetries, "n2", answer("n3"), refused); retry {
		t.Fatalf("sent again after %d retries", dpop.MaxNonceRetries)
	}
}
