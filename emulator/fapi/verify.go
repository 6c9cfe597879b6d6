package fapi

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
)

var fapiAlgs = []jose.SignatureAlgorithm{jose.PS256, jose.ES256}

// parseJWT verifies a compact JWS signed with PS256 or ES256 by key (or,
// when key is nil, by the JWK in its header, which is returned) and decodes
// its claims.
func parseJWT(tok string, key crypto.PublicKey, claims any) (hdr jose.Header, err error) {
	obj, err := jose.ParseSigned(tok, fapiAlgs)
	if err != nil {
		return hdr, fmt.Errorf("not a PS256 or ES256 JWS: %w", err)
	}
	if len(obj.Signatures) != 1 {
		return hdr, errors.New("not one signature")
	}
	hdr = obj.Signatures[0].Protected
	if key == nil {
		if hdr.JSONWebKey == nil || !hdr.JSONWebKey.IsPublic() || !hdr.JSONWebKey.Valid() {
			return hdr, errors.New("no public jwk in the header")
		}
		key = hdr.JSONWebKey.Key
	}
	payload, err := obj.Verify(key)
	if err != nil {
		return hdr, fmt.Errorf("signature: %w", err)
	}
	if err := json.Unmarshal(payload, claims); err != nil {
		return hdr, fmt.Errorf("claims: %w", err)
	}
	return hdr, nil
}

// audience is a JWT aud: one string or an array.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// clientAuth authenticates a PAR or token request and returns the client.
// private_key_jwt: PS256 or ES256 by the registered key, iss = sub =
// client_id, aud the issuer (FAPI 2.0 §5.3.2.1), unexpired, jti never seen.
// tls_client_auth: the certificate's common name. Caller holds s.mu.
func (s *Server) clientAuth(r *http.Request) (string, *Client, error) {
	f := r.PostForm
	id := f.Get("client_id")
	c, ok := s.cfg.Clients[id]
	if !ok {
		return "", nil, errors.New("unknown client_id")
	}
	switch c.Method {
	case "tls_client_auth":
		if f.Has("client_assertion") || f.Has("client_secret") || r.Header.Get("Authorization") != "" {
			return "", nil, errors.New("tls_client_auth client sent another credential")
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != c.CertSubject {
			return "", nil, errors.New("client certificate missing or not the registered one")
		}
	case "private_key_jwt":
		if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			return "", nil, errors.New("client_assertion_type is not jwt-bearer")
		}
		var cl struct {
			Iss, Sub, Jti string
			Aud           audience
			Exp, Iat      int64
		}
		if _, err := parseJWT(f.Get("client_assertion"), c.Key, &cl); err != nil {
			return "", nil, fmt.Errorf("client assertion: %w", err)
		}
		now := s.now().Unix()
		switch {
		case cl.Iss != id || cl.Sub != id:
			return "", nil, errors.New("client assertion: iss and sub must be the client_id")
		case !slices.Equal(cl.Aud, []string{s.issuer}):
			return "", nil, fmt.Errorf("client assertion: aud %q is not the issuer", []string(cl.Aud))
		case cl.Exp <= now || cl.Exp > now+300:
			return "", nil, errors.New("client assertion: expired or exp too far ahead")
		case cl.Jti == "" || s.seenJTI("assertion:"+cl.Jti):
			return "", nil, errors.New("client assertion: jti missing or replayed")
		}
	default:
		return "", nil, fmt.Errorf("client registered with unsupported method %q", c.Method)
	}
	return id, &c, nil
}

// dpopProof checks the DPoP proof of r (RFC 9449 §4.3) for the endpoint at
// htu, with ath the hash of the access token on a resource request, and
// returns the thumbprint of its key. A missing or stale nonce is
// errUseNonce. Caller holds s.mu.
func (s *Server) dpopProof(r *http.Request, server, htu, accessToken string) (string, error) {
	vals := r.Header.Values("DPoP")
	if len(vals) != 1 {
		return "", errors.New("not exactly one DPoP header")
	}
	var cl struct {
		Jti, Htm, Htu, Nonce, Ath string
		Iat                       int64
	}
	hdr, err := parseJWT(vals[0], nil, &cl)
	if err != nil {
		return "", fmt.Errorf("DPoP proof: %w", err)
	}
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); typ != "dpop+jwt" {
		return "", errors.New("DPoP proof: typ is not dpop+jwt")
	}
	now := s.now().Unix()
	switch {
	case cl.Htm != r.Method:
		return "", fmt.Errorf("DPoP proof: htm %q is not %s", cl.Htm, r.Method)
	case cl.Htu != htu:
		return "", fmt.Errorf("DPoP proof: htu %q is not %q", cl.Htu, htu)
	case cl.Iat < now-60 || cl.Iat > now+10:
		return "", errors.New("DPoP proof: iat outside the accepted window")
	case cl.Jti == "":
		return "", errors.New("DPoP proof: no jti")
	}
	if accessToken != "" && cl.Ath != s256(accessToken) {
		return "", errors.New("DPoP proof: ath does not match the access token")
	}
	if s.cfg.NonceEvery > 0 && !s.validNonce(server, cl.Nonce) {
		return "", errUseNonce
	}
	if s.seenJTI("dpop:" + cl.Jti) {
		s.stats.JTIReplays++
		return "", errors.New("DPoP proof: jti replayed")
	}
	tp, err := hdr.JSONWebKey.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("DPoP proof: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

var errUseNonce = errors.New("a DPoP nonce is required")

// htu is the URL a proof must name for r: scheme, host and path.
func htu(r *http.Request) string {
	return (&url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path}).String()
}

// certThumbprint is RFC 8705's x5t#S256 of the presented client certificate.
func certThumbprint(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return thumb(r.TLS.PeerCertificates[0])
}

func thumb(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
