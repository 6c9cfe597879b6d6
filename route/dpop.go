package route

import (
	"context"
	"errors"
	"net/http"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// DPoPClient makes the DPoP proofs of a route's resource requests and
// keeps the resource server's nonces (a *dpop.Client).
type DPoPClient interface {
	// ProofFor returns a proof for method to url with tok's hash and the
	// origin's nonce, and that nonce.
	ProofFor(method, url, accessToken string) (proof, nonce string, err error)
	// Proof returns a proof for method to url with tok's hash and nonce.
	Proof(method, url, accessToken, nonce string) (string, error)
	// Observe records the DPoP-Nonce of an answer from url's origin and
	// returns the nonce now held for it.
	Observe(url string, h http.Header) string
}

// MaxNonceRetries bounds how often one resource request is sent again for
// a new nonce: the same bound as token requests have (dpop.MaxNonceRetries).
const MaxNonceRetries = dpop.MaxNonceRetries

type nonceKey struct{}

// WithNonce returns ctx carrying the nonce a resource server just demanded
// (NonceRetry): the request prepared again under it proves with that nonce,
// not with the one held for the origin, which an answer arriving meanwhile
// may have set to an older nonce.
func WithNonce(ctx context.Context, nonce string) context.Context {
	return context.WithValue(ctx, nonceKey{}, nonce)
}

// prove sets a DPoP-bound token's Authorization and a fresh proof on out.
func (r *Route) prove(out *http.Request, tok *tokencache.Token) error {
	var proof string
	var err error
	if n, _ := out.Context().Value(nonceKey{}).(string); n != "" {
		proof, err = r.DPoP.Proof(out.Method, out.URL.String(), tok.Value, n)
	} else {
		proof, _, err = r.DPoP.ProofFor(out.Method, out.URL.String(), tok.Value)
	}
	if err != nil {
		var unavailable *vaultsrc.UnavailableError
		return &SigningError{Err: err, Unavailable: errors.As(err, &unavailable)}
	}
	out.Header.Set("Authorization", tok.Header)
	out.Header.Set(dpop.HeaderProof, proof)
	return nil
}

// NonceRetry takes the resource server's answer resp to the request
// resp.Request: it records the DPoP-Nonce (which the app does not get) and
// reports whether the request is to be prepared and sent again, and with
// which nonce (see WithNonce): resp is a 401 with WWW-Authenticate: DPoP
// error="use_dpop_nonce" and the nonce it demands differs from the one the
// request's proof carried. Always false on a route without DPoP.
func (r *Route) NonceRetry(resp *http.Response) (nonce string, retry bool) {
	out := resp.Request
	if r.DPoP == nil || out == nil {
		return "", false
	}
	// The answer's own nonce when it carries a valid one, else the one held.
	demanded := r.DPoP.Observe(out.URL.String(), resp.Header)
	resp.Header.Del(dpop.HeaderNonce)
	if resp.StatusCode != http.StatusUnauthorized || !dpop.WantsNonce(resp.Header) {
		return "", false
	}
	return demanded, demanded != "" && demanded != dpop.NonceOf(out.Header.Get(dpop.HeaderProof))
}

// NonceRefused reports whether resp is a resource server's refusal of a
// DPoP proof's nonce, which says nothing of the token: it is not dropped.
func (r *Route) NonceRefused(resp *http.Response) bool {
	return r.DPoP != nil && resp.StatusCode == http.StatusUnauthorized && dpop.WantsNonce(resp.Header)
}
