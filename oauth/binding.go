package oauth

import (
	"errors"
	"net/http"
	"strings"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Sender-constrained tokens: DPoP (RFC 9449) and certificate-bound tokens
// (RFC 8705). A token records what it is bound to in Token.Binding; the
// cache and AuthCode.Fetch use a token only while that is still the route's
// key or certificate.

// errNotDPoP is a bank answering a bearer token to a DPoP token request.
var errNotDPoP = errors.New("the bank answered a token that is not DPoP-bound (token_type is not DPoP) to a request with a DPoP proof; " +
	"it is refused, as FAPI 2.0 requires the binding: register the client for DPoP-bound tokens (dpop_bound_access_tokens) at the bank, or remove token.dpop")

// Binding is what the route's tokens must be bound to now: the DPoP key's
// "jkt:<thumbprint>", the client certificate's "x5t#S256:<thumbprint>", or
// "" for bearer tokens.
func (e *Endpoint) Binding() string {
	switch {
	case e.DPoP != nil:
		return e.DPoP.Binding()
	case e.CertBinding != nil:
		return e.CertBinding()
	}
	return ""
}

// proveTokenRequest adds a DPoP proof for a token request to tokenURL (the
// configured or discovered token endpoint) to hdr on a DPoP route, and
// returns the nonce it carries: demanded when the endpoint just asked for
// it, else the one held for the origin.
func (e *Endpoint) proveTokenRequest(tokenURL, demanded string, hdr http.Header) (string, error) {
	if e.DPoP == nil {
		return "", nil
	}
	var proof, nonce string
	var err error
	if demanded != "" {
		nonce = demanded
		proof, err = e.DPoP.Proof(http.MethodPost, tokenURL, "", nonce)
	} else {
		proof, nonce, err = e.DPoP.ProofFor(http.MethodPost, tokenURL, "")
	}
	if err != nil {
		return "", &endpointError{Route: e.Route, Endpoint: "token", Err: err}
	}
	hdr.Set(dpop.HeaderProof, proof)
	return nonce, nil
}

// retryWithNonce records the DPoP-Nonce of the token endpoint's answer and
// reports whether the request is to be sent once more, and with which
// nonce: it was refused with use_dpop_nonce (RFC 9449 §8), the nonce the
// answer demands differs from the one it carried, and it was not yet sent
// dpop.MaxNonceRetries times more. The retry proves with that nonce, not with the
// one held for the origin, which another answer may have changed meanwhile.
func (e *Endpoint) retryWithNonce(tokenURL string, attempt int, sent string, answer http.Header, err error) (string, bool) {
	if e.DPoP == nil || answer == nil {
		return "", false
	}
	demanded := e.DPoP.Observe(tokenURL, answer)
	var ee *endpointError
	return demanded, attempt < dpop.MaxNonceRetries && errors.As(err, &ee) && ee.Status == http.StatusBadRequest && ee.Code == dpop.ErrUseNonce &&
		demanded != "" && demanded != sent
}

// bind records what t is bound to: the DPoP key (the answer must say
// token_type DPoP, and a JWT access token's cnf jkt, when it has one, must
// be the key's thumbprint), or the client certificate the bank bound it to
// (the cnf x5t#S256 of a JWT access token, else the certificate presented).
func (e *Endpoint) bind(t *tokencache.Token, presented string) error {
	switch {
	case e.DPoP != nil:
		if !strings.EqualFold(t.Type, dpop.TokenType) {
			return errNotDPoP
		}
		if jkt := cnfOf(t.Value).JKT; jkt != "" && jkt != e.DPoP.Thumbprint() {
			return errOtherKey
		}
		t.Type, t.Header, t.Binding = dpop.TokenType, dpop.TokenType+" "+t.Value, e.DPoP.Binding()
	case e.CertBinding != nil:
		t.Binding = presented
		if x5t := cnfOf(t.Value).X5T; x5t != "" {
			t.Binding = CertBindingPrefix + x5t
		}
	}
	return nil
}

// errOtherKey is a DPoP token the bank bound to a key other than the route's.
var errOtherKey = errors.New("the bank bound the access token to another DPoP key (its cnf jkt is not the thumbprint of token.dpop's key); " +
	"it is refused, as it cannot be used with this key")

// CertBindingPrefix starts the Binding of a certificate-bound token.
const CertBindingPrefix = "x5t#S256:"

// confirmation is the cnf claim of a JWT access token (RFC 7800): the
// certificate's x5t#S256 (RFC 8705 §3.1) or the DPoP key's jkt (RFC 9449
// §6.1).
type confirmation struct {
	X5T string `json:"x5t#S256"`
	JKT string `json:"jkt"`
}

// cnfOf returns the cnf of an access token that is a JWT, the zero value for
// an opaque token (the signature is the bank's business, not ours).
func cnfOf(token string) confirmation {
	var c struct {
		Cnf confirmation `json:"cnf"`
	}
	if jws.Claims(token, &c) != nil {
		return confirmation{}
	}
	return c.Cnf
}
