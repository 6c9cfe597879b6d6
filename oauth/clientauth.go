package oauth

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/secret"
)

// AuthMethod is how the client authenticates at the token endpoint
// (RFC 6749 §2.3, RFC 8705, RFC 7523; names as in RFC 7591).
type AuthMethod string

// Client authentication methods.
const (
	// ClientSecretBasic: Authorization: Basic with the url-encoded client_id and secret.
	ClientSecretBasic AuthMethod = "client_secret_basic"
	// ClientSecretPost: client_id and client_secret in the form.
	ClientSecretPost AuthMethod = "client_secret_post"
	// TLSClientAuth (RFC 8705): the route's client certificate is the
	// credential; only client_id is sent.
	TLSClientAuth AuthMethod = "tls_client_auth"
	// PrivateKeyJWT (RFC 7523): a JWT signed by the client's key.
	PrivateKeyJWT AuthMethod = "private_key_jwt"
)

// ClientAuth is the client's identity at a token endpoint.
type ClientAuth struct {
	Method   AuthMethod
	ClientID string
	// Secret is the client secret for the client_secret_* methods.
	Secret secret.Source
	// Key signs the client assertion for private_key_jwt: any crypto.Signer
	// (ECDSA P-256 → ES256, RSA → RS256), so a Vault Transit key works.
	Key crypto.Signer
	// KeyID, when set, is the assertion's "kid" header.
	KeyID string
	// Alg is the assertion's JWS algorithm (ES256, PS256 or RS256); when
	// empty, ES256 for a P-256 key and RS256 for an RSA key.
	Alg string
	// Audience of the assertion; the endpoint's URL when empty. FAPI 2.0
	// (§5.3.2.1) wants the issuer identifier.
	Audience string
}

// Validate checks that the method has what it needs.
func (a *ClientAuth) Validate() error {
	if a.ClientID == "" {
		return errors.New("client_id is required")
	}
	switch a.Method {
	case ClientSecretBasic, ClientSecretPost:
		if a.Secret == nil {
			return fmt.Errorf("auth_method %s needs a client secret", a.Method)
		}
	case TLSClientAuth:
	case PrivateKeyJWT:
		if a.Key == nil {
			return errors.New("auth_method private_key_jwt needs a signing key")
		}
		if _, err := a.alg(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("auth_method %q is not one of client_secret_basic, client_secret_post, tls_client_auth, private_key_jwt", a.Method)
	}
	return nil
}

// apply adds the client authentication to a token request's form and headers.
func (a *ClientAuth) apply(ctx context.Context, tokenURL string, form url.Values, hdr http.Header, now time.Time) error {
	switch a.Method {
	case ClientSecretBasic, ClientSecretPost:
		v, err := a.Secret.Get(ctx)
		if err != nil {
			return fmt.Errorf("reading the client secret (%s): %w", a.Secret, err)
		}
		if a.Method == ClientSecretPost {
			form.Set("client_id", a.ClientID)
			form.Set("client_secret", v.Reveal())
			return nil
		}
		// RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
		cred := url.QueryEscape(a.ClientID) + ":" + url.QueryEscape(v.Reveal())
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	case TLSClientAuth:
		form.Set("client_id", a.ClientID)
	case PrivateKeyJWT:
		aud := a.Audience
		if aud == "" {
			aud = tokenURL
		}
		jwt, err := a.assertion(aud, now)
		if err != nil {
			return err
		}
		form.Set("client_id", a.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", jwt)
	default:
		return fmt.Errorf("auth_method %q is not supported", a.Method)
	}
	return nil
}

// alg is the assertion's algorithm: Alg, checked against the key, or the
// key's default.
func (a *ClientAuth) alg() (string, error) {
	alg, err := jws.Choose(a.Key.Public(), a.Alg, false)
	if err != nil {
		return "", fmt.Errorf("private_key_jwt: %w", err)
	}
	return alg, nil
}

// assertion builds the RFC 7523 client assertion: iss = sub = client_id,
// aud, a random jti, iat and a 60 s exp.
func (a *ClientAuth) assertion(aud string, now time.Time) (string, error) {
	alg, err := a.alg()
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("private_key_jwt: %w", err)
	}
	hdr := map[string]any{"typ": "JWT"}
	if a.KeyID != "" {
		hdr["kid"] = a.KeyID
	}
	claims := map[string]any{"iss": a.ClientID, "sub": a.ClientID, "aud": aud, "jti": hex.EncodeToString(jti[:]),
		"iat": now.Unix(), "exp": now.Add(60 * time.Second).Unix()}
	tok, err := jws.SignJSON(a.Key, alg, hdr, claims)
	if err != nil {
		return "", fmt.Errorf("private_key_jwt: signing the client assertion: %w", err)
	}
	return tok, nil
}
