// Package dpoptest checks DPoP proofs (RFC 9449 §4.3) as an authorization
// or resource server does, with go-jose: the signature by the key in the
// header, typ, alg, htm, htu, iat within a window, a jti never seen before,
// ath and nonce. Tests of tokenproxy's DPoP use it as the far side.
package dpoptest

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrNonce is a proof whose nonce is not the one the server wants: the
// server answers use_dpop_nonce.
var ErrNonce = errors.New("dpop nonce")

// Claims are a proof's claims.
type Claims struct {
	HTM   string `json:"htm"`
	HTU   string `json:"htu"`
	IAT   int64  `json:"iat"`
	JTI   string `json:"jti"`
	ATH   string `json:"ath"`
	Nonce string `json:"nonce"`
}

// Proof is a verified proof: its claims, its algorithm and its key's
// RFC 7638 thumbprint.
type Proof struct {
	Claims
	Alg string
	JKT string
}

// Verifier checks proofs and remembers every jti it accepted. It is safe
// for concurrent use.
type Verifier struct {
	// Window bounds |iat - now| (default 60 s).
	Window time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu   sync.Mutex
	jtis map[string]bool
}

// Verify checks proof for a request of method to htu, carrying token (""
// for a token request) with nonce expected ("" for none wanted).
func (v *Verifier) Verify(proof, method, htu, token, nonce string) (*Proof, error) {
	if proof == "" || strings.Contains(proof, ",") {
		return nil, errors.New("not exactly one DPoP header")
	}
	jws, err := jose.ParseSigned(proof, []jose.SignatureAlgorithm{jose.ES256, jose.PS256})
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("not one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders["typ"].(string); typ != "dpop+jwt" {
		return nil, fmt.Errorf("typ %q", typ)
	}
	if h.JSONWebKey == nil || !h.JSONWebKey.IsPublic() {
		return nil, errors.New("no public jwk in the header")
	}
	payload, err := jws.Verify(h.JSONWebKey.Key)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	win := v.Window
	if win == 0 {
		win = time.Minute
	}
	switch d := time.Duration(now().Unix()-c.IAT) * time.Second; {
	case c.HTM != method:
		return nil, fmt.Errorf("htm %q, want %q", c.HTM, method)
	case c.HTU != htu:
		return nil, fmt.Errorf("htu %q, want %q", c.HTU, htu)
	case d > win || d < -win:
		return nil, fmt.Errorf("iat %d is %v away from now", c.IAT, d)
	case len(c.JTI) < 22:
		return nil, fmt.Errorf("jti %q is shorter than 128 bits", c.JTI)
	case token != "" && c.ATH != ATH(token):
		return nil, errors.New("ath does not match the access token")
	case token == "" && c.ATH != "":
		return nil, errors.New("ath on a token request")
	case c.Nonce != nonce:
		return &Proof{Claims: c, Alg: h.Algorithm}, fmt.Errorf("%w %q, want %q", ErrNonce, c.Nonce, nonce)
	}
	tp, err := h.JSONWebKey.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.jtis == nil {
		v.jtis = map[string]bool{}
	}
	if v.jtis[c.JTI] {
		return nil, fmt.Errorf("jti %q replayed", c.JTI)
	}
	v.jtis[c.JTI] = true
	return &Proof{Claims: c, Alg: h.Algorithm, JKT: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// Seen is how many distinct jtis were accepted.
func (v *Verifier) Seen() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.jtis)
}

// ATH is base64url(SHA-256(token)).
func ATH(token string) string {
	s := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(s[:])
}
