// Package dpop makes DPoP proofs (RFC 9449): a JWT signed by the client's
// key, carrying the public key in its header, that binds one HTTP request
// (method and URL, and on a resource request the access token's hash) to
// the key, so that a token bound to the key is useless without it.
//
// A Proofer holds the key (any crypto.Signer: a PEM key or a Vault Transit
// key) and its algorithm, with the encoded header made once. A Client adds
// the nonce memory of one kind of server (authorization or resource): the
// last DPoP-Nonce each origin sent, put in every later proof to that origin.
// Nothing here logs; a proof, a key or a token never appears in an error.
package dpop

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
)

// Header names (RFC 9449 §4.1, §8).
const (
	// HeaderProof carries the proof on a request.
	HeaderProof = "DPoP"
	// HeaderNonce carries the nonce a server wants in later proofs.
	HeaderNonce = "DPoP-Nonce"
	// TokenType is the token_type of a DPoP-bound access token and the
	// Authorization scheme it is sent with.
	TokenType = "DPoP"
	// ErrUseNonce is the error code of a server that wants a (new) nonce.
	ErrUseNonce = "use_dpop_nonce"
)

// MaxNonceRetries bounds how often one request (to a token endpoint or a
// resource server) is sent again because the server asked for a new nonce:
// each retry needs a nonce other than the one the refused proof carried,
// so this only matters when the server changes its nonce again while the
// request travels.
const MaxNonceRetries = 3

// Proofer signs DPoP proofs with one key. It is safe for concurrent use.
type Proofer struct {
	key    crypto.Signer
	alg    string
	jkt    string
	bind   string // "jkt:" + jkt
	header string // the encoded JOSE header: alg, typ dpop+jwt, jwk
	// Now is the clock of iat (time.Now when nil).
	Now func() time.Time
}

// New returns a Proofer for key signing with alg (ES256 or PS256; "" takes
// the key's: ES256 for a P-256 key, PS256 for an RSA key). RS256 is
// refused: FAPI 2.0 does not allow it.
func New(key crypto.Signer, alg string) (*Proofer, error) {
	if key == nil {
		return nil, errors.New("dpop: no key")
	}
	pub := key.Public()
	if alg != "" && alg != jws.ES256 && alg != jws.PS256 {
		return nil, fmt.Errorf("dpop: algorithm %q is not allowed; use ES256 (P-256 key) or PS256 (RSA key)", alg)
	}
	alg, err := jws.Choose(pub, alg, true)
	if err != nil {
		return nil, fmt.Errorf("dpop key: %w", err)
	}
	jwk, err := jws.JWK(pub)
	if err != nil {
		return nil, fmt.Errorf("dpop key: %w", err)
	}
	jkt, err := jws.Thumbprint(pub)
	if err != nil {
		return nil, fmt.Errorf("dpop key: %w", err)
	}
	h, err := json.Marshal(map[string]any{"typ": "dpop+jwt", "alg": alg, "jwk": jwk})
	if err != nil {
		return nil, fmt.Errorf("dpop: encoding the header: %w", err)
	}
	return &Proofer{key: key, alg: alg, jkt: jkt, bind: "jkt:" + jkt, header: jws.B64(h)}, nil
}

// Alg is the proofs' algorithm.
func (p *Proofer) Alg() string { return p.alg }

// Thumbprint is the key's RFC 7638 thumbprint: the jkt a bound token's
// cnf names (RFC 9449 §6.1).
func (p *Proofer) Thumbprint() string { return p.jkt }

// Binding names what tokens fetched with this key are bound to:
// "jkt:<thumbprint>".
func (p *Proofer) Binding() string { return p.bind }

// Proof returns a proof for a request of method to rawURL: htm, htu (the
// URL without query and fragment), iat, a random jti, ath when
// accessToken is not empty (a resource request) and nonce when not empty.
func (p *Proofer) Proof(method, rawURL, accessToken, nonce string) (string, error) {
	htu, err := HTU(rawURL)
	if err != nil {
		return "", err
	}
	var jti [18]byte // 144 bits
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("dpop: %w", err)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	// The claims are written by hand, the strings escaped as JSON, so that
	// a proof costs one allocation of its claims and the signature.
	b := make([]byte, 0, 256)
	b = append(b, `{"htm":`...)
	b = appendJSONString(b, method)
	b = append(b, `,"htu":`...)
	b = appendJSONString(b, htu)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, now().Unix(), 10)
	b = append(b, `,"jti":"`...)
	b = append(b, jws.B64(jti[:])...)
	b = append(b, '"')
	if accessToken != "" {
		b = append(b, `,"ath":"`...)
		b = append(b, ATH(accessToken)...)
		b = append(b, '"')
	}
	if nonce != "" {
		b = append(b, `,"nonce":`...)
		b = appendJSONString(b, nonce)
	}
	b = append(b, '}')
	input := make([]byte, 0, len(p.header)+1+base64.RawURLEncoding.EncodedLen(len(b)))
	input = append(append(input, p.header...), '.')
	input = base64.RawURLEncoding.AppendEncode(input, b)
	sig, err := jws.SignInput(p.key, p.alg, input)
	if err != nil {
		return "", fmt.Errorf("dpop: signing the proof: %w", err)
	}
	out := append(input, '.')
	return string(base64.RawURLEncoding.AppendEncode(out, sig)), nil
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			plain = false
			break
		}
	}
	if plain {
		return append(append(append(b, '"'), s...), '"')
	}
	q, _ := json.Marshal(s) // a string always encodes
	return append(b, q...)
}

// ATH is the access token's hash as a proof carries it: base64url of its
// SHA-256 (RFC 9449 §4.2).
func ATH(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return jws.B64(sum[:])
}

// HTU is the htu of a request to rawURL: scheme, host and path, without
// query and fragment (RFC 9449 §4.2).
func HTU(rawURL string) (string, error) {
	if i := strings.IndexAny(rawURL, "?#"); i >= 0 {
		rawURL = rawURL[:i]
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", errors.New("dpop: the request URL is not absolute")
	}
	return rawURL, nil
}

// Origin is the scheme and host of rawURL: the server a nonce belongs to.
func Origin(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// Client is a Proofer with the nonce memory of one kind of server: the
// authorization server's token endpoint or the resource server. Each origin
// has its own nonce, replaced by every DPoP-Nonce an answer carries. It is
// safe for concurrent use.
type Client struct {
	*Proofer
	nonces sync.Map // origin → string
}

// NewClient returns a Client over p with no nonce yet.
func NewClient(p *Proofer) *Client { return &Client{Proofer: p} }

// Nonce is the nonce last received from rawURL's origin ("" for none).
func (c *Client) Nonce(rawURL string) string {
	if v, ok := c.nonces.Load(Origin(rawURL)); ok {
		return v.(string)
	}
	return ""
}

// ProofFor returns a proof for method to rawURL with the origin's current
// nonce, and that nonce.
func (c *Client) ProofFor(method, rawURL, accessToken string) (proof, nonce string, err error) {
	nonce = c.Nonce(rawURL)
	proof, err = c.Proof(method, rawURL, accessToken, nonce)
	return proof, nonce, err
}

// Observe records the DPoP-Nonce of an answer from rawURL's origin, if it
// has one, and returns the nonce now held for the origin.
func (c *Client) Observe(rawURL string, h http.Header) string {
	n := h.Get(HeaderNonce)
	origin := Origin(rawURL)
	if n == "" || !validNonce(n) {
		if v, ok := c.nonces.Load(origin); ok {
			return v.(string)
		}
		return ""
	}
	if v, ok := c.nonces.Load(origin); !ok || v.(string) != n {
		c.nonces.Store(origin, n)
	}
	return n
}

// validNonce accepts a nonce as RFC 9449 §8.1 defines it: 1*NQCHAR, of a
// sane length.
func validNonce(n string) bool {
	if len(n) > 1024 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// WantsNonce reports whether a resource server's 401 asks for a (new)
// nonce: WWW-Authenticate: DPoP error="use_dpop_nonce" (RFC 9449 §9).
func WantsNonce(h http.Header) bool {
	for _, v := range h.Values("WWW-Authenticate") {
		if len(v) >= 4 && strings.EqualFold(v[:4], "dpop") && strings.Contains(v, `error="`+ErrUseNonce+`"`) {
			return true
		}
	}
	return false
}

// NonceOf returns the nonce claim of a proof this package made ("" when it
// has none or does not parse); the proof's signature is not checked.
func NonceOf(proof string) string {
	var c struct {
		Nonce string `json:"nonce"`
	}
	if jws.Claims(proof, &c) != nil {
		return ""
	}
	return c.Nonce
}
