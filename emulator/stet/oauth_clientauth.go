package stet

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
)

// authenticate checks the client authentication of a token or revocation
// request against the client's registered method and returns its client_id.
// The method is told from the request: Basic header, client_secret in the
// form, a client assertion, or client_id alone (tls_client_auth). Caller holds a.mu.
func (a *authServer) authenticate(r *http.Request) (string, bool) {
	f := r.PostForm
	var id, method string
	switch {
	case strings.HasPrefix(r.Header.Get("Authorization"), "Basic "):
		u, p, ok := r.BasicAuth()
		if !ok {
			return "", false
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		p, err2 = url.QueryUnescape(p)
		c, known := a.cfg.Clients[id]
		return id, err1 == nil && err2 == nil && known && c.Method == "client_secret_basic" && constEq(p, c.Secret)
	case f.Has("client_secret"):
		id, method = f.Get("client_id"), "client_secret_post"
	case f.Has("client_assertion"):
		id, method = f.Get("client_id"), "private_key_jwt"
	default:
		id, method = f.Get("client_id"), "tls_client_auth"
	}
	c, known := a.cfg.Clients[id]
	if !known || c.Method != method {
		return "", false
	}
	switch method {
	case "client_secret_post":
		return id, constEq(f.Get("client_secret"), c.Secret)
	case "tls_client_auth":
		return id, c.CertSubject != "" && r.TLS.PeerCertificates[0].Subject.CommonName == c.CertSubject
	default:
		aud := "https://" + r.Host + r.URL.Path
		return id, f.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" &&
			a.verifyAssertion(f.Get("client_assertion"), id, aud, c.Key)
	}
}

// verifyAssertion checks an RFC 7523 client assertion: signature (ES256 or
// RS256) by key, iss = sub = client_id, aud, unexpired, jti never seen.
func (a *authServer) verifyAssertion(jwt, clientID, aud string, key crypto.PublicKey) bool {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return false
	}
	var hdr struct{ Alg string }
	var cl struct {
		Iss, Sub, Aud, Jti string
		Exp                int64
	}
	if !decodePart(parts[0], &hdr) || !decodePart(parts[1], &cl) {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return false
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if hdr.Alg != "ES256" || len(sig) != 64 ||
			!ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return false
		}
	case *rsa.PublicKey:
		if hdr.Alg != "RS256" || rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) != nil {
			return false
		}
	default:
		return false
	}
	if cl.Iss != clientID || cl.Sub != clientID || cl.Aud != aud || cl.Jti == "" || a.jtis[cl.Jti] || a.now().Unix() >= cl.Exp {
		return false
	}
	a.jtis[cl.Jti] = true
	return true
}

func decodePart(s string, v any) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && json.Unmarshal(b, v) == nil
}
