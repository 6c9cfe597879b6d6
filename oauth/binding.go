package oauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/tokenproxy/tokenproxy/dpop"
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
// returns the nonce it carries.
func (e *Endpoint) proveTokenRequest(tokenURL string, hdr http.Header) (string, error) {
	if e.DPoP == nil {
		return "", nil
	}
	proof, nonce, err := e.DPoP.ProofFor(http.MethodPost, tokenURL, "")
	if err != nil {
		return "", &endpointError{Route: e.Route, Endpoint: "token", Err: err}
	}
	hdr.Set(dpop.HeaderProof, proof)
	return nonce, nil
}

// retryWithNonce records the DPoP-Nonce of the token endpoint's answer and
// reports whether the request is to be sent once more: the first attempt
// was refused with use_dpop_nonce (RFC 9449 §8) and a nonce other than the
// one it carried is now known.
func (e *Endpoint) retryWithNonce(tokenURL string, attempt int, sent string, answer http.Header, err error) bool {
	if e.DPoP == nil || answer == nil {
		return false
	}
	now := e.DPoP.Observe(tokenURL, answer)
	var ee *endpointError
	return attempt == 0 && errors.As(err, &ee) && ee.Status == http.StatusBadRequest && ee.Code == dpop.ErrUseNonce &&
		now != "" && now != sent
}

// bind records what t is bound to: the DPoP key (the answer must say
// token_type DPoP), or the client certificate the bank bound it to (the
// cnf x5t#S256 of a JWT access token, else the certificate presented).
func (e *Endpoint) bind(t *tokencache.Token, presented string) error {
	switch {
	case e.DPoP != nil:
		if !strings.EqualFold(t.Type, dpop.TokenType) {
			return errNotDPoP
		}
		t.Type, t.Header, t.Binding = dpop.TokenType, dpop.TokenType+" "+t.Value, e.DPoP.Binding()
	case e.CertBinding != nil:
		t.Binding = presented
		if x5t := cnfX5T(t.Value); x5t != "" {
			t.Binding = CertBindingPrefix + x5t
		}
	}
	return nil
}

// CertBindingPrefix starts the Binding of a certificate-bound token.
const CertBindingPrefix = "x5t#S256:"

// cnfX5T returns the cnf "x5t#S256" of an access token that is a JWT, ""
// for an opaque token (the signature is the bank's business, not ours).
func cnfX5T(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Cnf struct {
			X5T string `json:"x5t#S256"`
		} `json:"cnf"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Cnf.X5T
}
