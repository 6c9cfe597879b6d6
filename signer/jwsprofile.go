package signer

// Profile ob-detached-jws: the UK Open Banking Read/Write API's message signing (v3.1.x, Read/Write Data
// API Profile, "Message Signing"). The request body is signed as a JWS with detached content (RFC 7515
// appendix F) and sent as `x-jws-signature: <header>..<signature>`. Up to v3.1.3 the payload is
// unencoded (RFC 7797, "b64": false, listed in "crit"); from v3.1.4 the b64 claim is gone and the
// signing input is the usual <header>.<base64url body>.

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tokenproxy/tokenproxy/internal/jws"
)

// Header names of profile ob-detached-jws and of the interaction id, as Go canonicalizes them.
const (
	// HeaderJWSSignature carries the detached JWS of the request body.
	HeaderJWSSignature = "X-Jws-Signature"
	// HeaderInteractionID is the FAPI correlation id (an RFC 4122 UUID).
	HeaderInteractionID = "X-Fapi-Interaction-Id"
)

// The Open Banking private header parameters (RFC 7515 section 4.3), all critical.
const (
	ClaimOBIssuedAt    = "http://openbanking.org.uk/iat"
	ClaimOBIssuer      = "http://openbanking.org.uk/iss"
	ClaimOBTrustAnchor = "http://openbanking.org.uk/tan"
)

// DefaultTrustAnchor is the http://openbanking.org.uk/tan of the Open Banking Directory.
const DefaultTrustAnchor = "openbanking.org.uk"

// jwsPlan is the key-independent part of an ob-detached-jws configuration.
type jwsPlan struct {
	alg            string // PS256, ES256, or "" to follow the key
	b64Claim       bool   // "b64": false and an unencoded payload (v3.1.3 and earlier)
	issuer         string // template
	issuerNeedCert bool
	trustAnchor    string
	crit           []string
}

// detachedJWS checks the options of profile ob-detached-jws.
func (p *plan) detachedJWS(o *Options) error {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"digest", o.Digest != ""}, {"headers", len(o.Headers) > 0}, {"optional_headers", len(o.OptionalHeaders) > 0},
		{"certificate_header", o.CertificateHeader != ""}, {"rfc2047", o.RFC2047 != nil}, {"label", o.Label != ""},
		{"include_alg", o.IncludeAlg != nil}, {"expires", o.Expires != 0}, {"tag", o.Tag != ""},
	} {
		if f.set {
			return verr(f.name, "not used by profile ob-detached-jws, which signs the body alone; remove it")
		}
	}
	j := &jwsPlan{b64Claim: true, issuer: o.JWSIssuer, trustAnchor: o.JWSTrustAnchor}
	switch a := strings.ToUpper(o.Algorithm); a {
	case "", jws.PS256, jws.ES256:
		j.alg = a
	case jws.RS256:
		return verr("algorithm", "RS256 is not allowed for Open Banking message signing, which requires PS256; use PS256 (or ES256 with a P-256 key)")
	default:
		return verr("algorithm", "unknown algorithm %q for profile ob-detached-jws; use PS256 or ES256", o.Algorithm)
	}
	if err := p.formats(o); err != nil {
		return err
	}
	if err := p.keyIDTemplate(o); err != nil {
		return err
	}
	if j.issuer == "" {
		return verr("jws_issuer", "required for profile ob-detached-jws: the http://openbanking.org.uk/iss claim, "+
			`"<org-id>/<software-statement-id>" from the Open Banking Directory, or "{subject}" for the signing certificate's subject`)
	}
	needCert, err := parseKeyIDTemplate(j.issuer)
	if err != nil {
		return verr("jws_issuer", "%v", err)
	}
	j.issuerNeedCert = needCert
	if j.trustAnchor == "" {
		j.trustAnchor = DefaultTrustAnchor
	}
	if strings.TrimSpace(j.trustAnchor) != j.trustAnchor || strings.ContainsAny(j.trustAnchor, " \t\r\n/") {
		return verr("jws_trust_anchor", "%q is not a domain name; use the trust anchor's domain, e.g. %s", j.trustAnchor, DefaultTrustAnchor)
	}
	if o.JWSB64Claim != nil {
		j.b64Claim = *o.JWSB64Claim
	}
	if j.b64Claim {
		j.crit = []string{"b64", ClaimOBIssuedAt, ClaimOBIssuer, ClaimOBTrustAnchor}
	} else {
		j.crit = []string{ClaimOBIssuedAt, ClaimOBIssuer, ClaimOBTrustAnchor}
	}
	p.jws = j
	p.interactionID = o.InteractionID == nil || *o.InteractionID
	return nil
}

// httpSignatureOnly refuses the ob-detached-jws options on the HTTP-signature profiles and reads
// interaction_id, which they leave off by default.
func (p *plan) httpSignatureOnly(o *Options) error {
	switch {
	case o.JWSB64Claim != nil:
		return verr("jws_b64_claim", "only for profile ob-detached-jws")
	case o.JWSIssuer != "":
		return verr("jws_issuer", "only for profile ob-detached-jws")
	case o.JWSTrustAnchor != "":
		return verr("jws_trust_anchor", "only for profile ob-detached-jws")
	}
	p.interactionID = o.InteractionID != nil && *o.InteractionID
	return nil
}

// jwsKeyState chooses the JWS algorithm for the key and fills kid and iss.
func (p *plan) jwsKeyState(key *tls.Certificate, sk crypto.Signer, cert *x509.Certificate) (*keyState, error) {
	pub := sk.Public()
	alg := p.jws.alg
	if alg == "" {
		var err error
		if alg, err = jws.Alg(pub, true); err != nil {
			return nil, verr("key", "the signing key cannot sign a JWS: %v; load an RSA (PS256) or ECDSA P-256 (ES256) key", err)
		}
	}
	if err := jws.CheckAlg(pub, alg); err != nil {
		return nil, verr("algorithm", "%v", err)
	}
	kid, err := expandKeyID(p.keyID, cert, pub, p.serialFormat, p.dnOrder)
	if err != nil {
		return nil, verr("key_id", "%v", err)
	}
	iss, err := expandKeyID(p.jws.issuer, cert, pub, p.serialFormat, p.dnOrder)
	if err != nil {
		return nil, verr("jws_issuer", "%v", err)
	}
	return &keyState{key: key, signer: sk, leaf: cert, keyID: kid, jwsAlg: alg, jwsIssuer: iss}, nil
}

// jwsSigned reports whether a request is signed: one with a body, or a POST, PUT or PATCH.
func jwsSigned(method string, body []byte) bool {
	return len(body) > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

// signJWS sets x-jws-signature on a request with a body; a request without one carries none.
func (s *signer) signJWS(req *http.Request, body []byte, st *keyState, now time.Time) error {
	if !jwsSigned(req.Method, body) {
		return nil
	}
	v, err := s.p.jws.sign(st, req.Header.Get("Content-Type"), body, now)
	if err != nil {
		return err
	}
	req.Header[HeaderJWSSignature] = []string{v}
	return nil
}

// sign returns the detached JWS of body.
func (j *jwsPlan) sign(st *keyState, contentType string, body []byte, now time.Time) (string, error) {
	h := j.header(st, contentType, now)
	if j.b64Claim {
		v, err := jws.SignDetachedUnencoded(st.signer, st.jwsAlg, h, body)
		if err != nil {
			return "", fmt.Errorf("signing: %w", err)
		}
		return v, nil
	}
	// v3.1.4 and later: an ordinary JWS whose payload part is then removed (RFC 7515 appendix F).
	v, err := jws.Sign(st.signer, st.jwsAlg, h, body)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	first, last := strings.IndexByte(v, '.'), strings.LastIndexByte(v, '.')
	return v[:first+1] + v[last:], nil
}

// header is the protected header, without alg (internal/jws sets it).
func (j *jwsPlan) header(st *keyState, contentType string, now time.Time) map[string]any {
	h := map[string]any{
		"kid":              st.keyID,
		"typ":              "JOSE",
		"cty":              jwsContentType(contentType),
		ClaimOBIssuedAt:    now.Unix(),
		ClaimOBIssuer:      st.jwsIssuer,
		ClaimOBTrustAnchor: j.trustAnchor,
		"crit":             j.crit,
	}
	if j.b64Claim {
		h["b64"] = false
	}
	return h
}

// jwsContentType is the cty claim: application/json for a JSON body (or one without a Content-Type), the
// body's media type otherwise, as the specification asks for non-JSON payloads such as payment files.
func jwsContentType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt == "" || mt == "application/json" || mt == "json" {
		return "application/json"
	}
	return mt
}

// setInteractionID keeps the app's x-fapi-interaction-id when it is one UUID in its canonical
// 8-4-4-4-12 form, and replaces it with a new UUID v4 otherwise.
func setInteractionID(h http.Header, newID func() string) {
	if v := h[HeaderInteractionID]; len(v) == 1 && validInteractionID(v[0]) {
		return
	}
	h[HeaderInteractionID] = []string{newID()}
}

// validInteractionID reports whether v is an RFC 4122 UUID as FAPI sends it: 36 characters, hyphenated.
func validInteractionID(v string) bool {
	if len(v) != 36 {
		return false
	}
	_, err := uuid.Parse(v)
	return err == nil
}
