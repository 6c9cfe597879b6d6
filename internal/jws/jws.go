// Package jws builds compact JSON Web Signatures (RFC 7515) with any
// crypto.Signer, so a key held in Vault Transit signs as a local one does:
// client assertions (RFC 7523), DPoP proofs (RFC 9449), request objects
// (RFC 9101) and detached payload signatures (RFC 7797). It also gives a
// public key's JWK and its RFC 7638 thumbprint.
//
// Only the algorithms FAPI 2.0 allows, and RS256 for the banks that still
// want it, are produced: ES256 (ECDSA P-256, r||s as RFC 7518 §3.4 says),
// PS256 (RSASSA-PSS with SHA-256 and a salt as long as the hash, which RFC
// 7518 §3.5 requires and certified verifiers enforce) and RS256.
package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Algorithms.
const (
	ES256 = "ES256"
	PS256 = "PS256"
	RS256 = "RS256"
)

// Alg returns the algorithm a key signs with when the caller has no
// preference: ES256 for a P-256 key, PS256 for an RSA key when pss is true,
// RS256 otherwise.
func Alg(pub crypto.PublicKey, pss bool) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return ES256, nil
		}
		return "", fmt.Errorf("ECDSA key on %s: only P-256 is supported (ES256)", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits: at least 2048 are needed", k.N.BitLen())
		}
		if pss {
			return PS256, nil
		}
		return RS256, nil
	}
	return "", fmt.Errorf("unsupported key type %T (use ECDSA P-256 or RSA)", pub)
}

// Choose returns alg when key pub can sign with it, or the key's default
// (Alg, PS256 for an RSA key when pss is true) when alg is empty.
func Choose(pub crypto.PublicKey, alg string, pss bool) (string, error) {
	if alg == "" {
		return Alg(pub, pss)
	}
	if err := CheckAlg(pub, alg); err != nil {
		return "", err
	}
	return alg, nil
}

// CheckAlg reports whether key pub can sign with alg.
func CheckAlg(pub crypto.PublicKey, alg string) error {
	switch alg {
	case ES256:
		if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			return fmt.Errorf("ES256 needs an ECDSA P-256 key, not %s", describe(pub))
		}
	case PS256, RS256:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an RSA key, not %s", alg, describe(pub))
		}
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%s needs an RSA key of at least 2048 bits, not %d", alg, k.N.BitLen())
		}
	default:
		return fmt.Errorf("algorithm %q is not one of ES256, PS256, RS256", alg)
	}
	return nil
}

func describe(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "an ECDSA " + k.Curve.Params().Name + " key"
	case *rsa.PublicKey:
		return "an RSA key"
	}
	return fmt.Sprintf("a %T", pub)
}

// B64 is base64url without padding, as JOSE encodes every part.
func B64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Claims decodes the JSON payload of a compact JWS into v without checking
// its signature: for reading what a token or a proof says (a cnf, a nonce),
// never for trusting it. It fails when tok is not three dot-separated parts
// with a base64url JSON payload.
func Claims(tok string, v any) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return errors.New("jws: not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fmt.Errorf("jws: payload: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("jws: payload: %w", err)
	}
	return nil
}

// Sign returns the compact JWS of payload under header, signed by key with
// alg (header's "alg" is set to alg). The payload is base64url-encoded into
// the token.
func Sign(key crypto.Signer, alg string, header map[string]any, payload []byte) (string, error) {
	h, input, err := signingInput(alg, header, B64(payload))
	if err != nil {
		return "", err
	}
	sig, err := SignInput(key, alg, []byte(input))
	if err != nil {
		return "", err
	}
	return h + "." + B64(payload) + "." + B64(sig), nil
}

// SignJSON is Sign with claims marshalled as JSON.
func SignJSON(key crypto.Signer, alg string, header map[string]any, claims any) (string, error) {
	c, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jws: encoding the claims: %w", err)
	}
	return Sign(key, alg, header, c)
}

// SignDetachedUnencoded returns the detached JWS of payload with an
// unencoded payload (RFC 7797, "b64": false, which header must say and list
// in "crit"): "<header>..<signature>", the signing input being the encoded
// header, a dot and the payload's raw bytes.
func SignDetachedUnencoded(key crypto.Signer, alg string, header map[string]any, payload []byte) (string, error) {
	if b, ok := header["b64"].(bool); !ok || b {
		return "", errors.New(`jws: an unencoded payload needs "b64": false in the header`)
	}
	h, _, err := signingInput(alg, header, "")
	if err != nil {
		return "", err
	}
	input := make([]byte, 0, len(h)+1+len(payload))
	input = append(append(append(input, h...), '.'), payload...)
	sig, err := SignInput(key, alg, input)
	if err != nil {
		return "", err
	}
	return h + ".." + B64(sig), nil
}

func signingInput(alg string, header map[string]any, encodedPayload string) (encodedHeader, input string, err error) {
	hdr := make(map[string]any, len(header)+1)
	for k, v := range header {
		hdr[k] = v
	}
	hdr["alg"] = alg
	h, err := json.Marshal(hdr)
	if err != nil {
		return "", "", fmt.Errorf("jws: encoding the header: %w", err)
	}
	encodedHeader = B64(h)
	return encodedHeader, encodedHeader + "." + encodedPayload, nil
}

// SignInput signs a JWS signing input with alg and returns the signature as
// JWS carries it (r||s for ES256).
func SignInput(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	if err := CheckAlg(key.Public(), alg); err != nil {
		return nil, fmt.Errorf("jws: %w", err)
	}
	digest := sha256.Sum256(input)
	var opts crypto.SignerOpts = crypto.SHA256
	if alg == PS256 {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	sig, err := key.Sign(rand.Reader, digest[:], opts)
	if err != nil {
		return nil, fmt.Errorf("jws: signing with %s: %w", alg, err)
	}
	if alg == ES256 {
		return ecdsaRaw(sig)
	}
	return sig, nil
}

// ecdsaRaw turns an ASN.1 ECDSA signature into JWS's r||s (32 bytes each).
// A signature already 64 bytes long is taken as r||s.
func ecdsaRaw(der []byte) ([]byte, error) {
	if len(der) == 64 && der[0] != 0x30 {
		return der, nil
	}
	var s struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil || len(rest) != 0 || s.R == nil || s.S == nil || s.R.Sign() <= 0 || s.S.Sign() <= 0 ||
		s.R.BitLen() > 256 || s.S.BitLen() > 256 {
		return nil, errors.New("jws: the signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 64)
	s.R.FillBytes(out[:32])
	s.S.FillBytes(out[32:])
	return out, nil
}

// JWK returns the public JWK of pub (RFC 7517): kty, crv, x, y for a P-256
// key; kty, n, e for an RSA key.
func JWK(pub crypto.PublicKey) (map[string]any, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("jws: only P-256 ECDSA keys have a JWK here")
		}
		raw, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, fmt.Errorf("jws: %w", err)
		}
		return map[string]any{"kty": "EC", "crv": "P-256", "x": B64(raw[1:33]), "y": B64(raw[33:65])}, nil
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "n": B64(k.N.Bytes()), "e": B64(big.NewInt(int64(k.E)).Bytes())}, nil
	}
	return nil, fmt.Errorf("jws: unsupported key type %T", pub)
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of pub's JWK, base64url
// encoded: DPoP's jkt (RFC 9449 §6.1).
func Thumbprint(pub crypto.PublicKey) (string, error) {
	j, err := JWK(pub)
	if err != nil {
		return "", err
	}
	// The required members in lexicographic order, no white space.
	var canon string
	switch j["kty"] {
	case "EC":
		canon = fmt.Sprintf(`{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}`, j["x"], j["y"])
	default:
		canon = fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, j["e"], j["n"])
	}
	sum := sha256.Sum256([]byte(canon))
	return B64(sum[:]), nil
}
