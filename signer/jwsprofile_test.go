package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
)

const (
	obIssuer = "0015800001041REAAY/2kiXQyo0tedjW2somjSgH7"
	obBody   = `{"Data":{"Initiation":{"InstructionIdentification":"ACME412","InstructedAmount":{"Amount":"165.88","Currency":"GBP"}}},"Risk":{}}`
)

func boolp(b bool) *bool { return &b }

// obNow is the signers' clock: the test certificates are valid from an hour ago.
var obNow = time.Now().Unix()

// obSign signs one request with opts and key at obNow and returns it.
func obSign(t *testing.T, opts Options, key *tls.Certificate, method, contentType string, body []byte, hdr http.Header) *http.Request {
	t.Helper()
	s, err := newSigner(opts, StaticKey{key}, fixedClock(obNow))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.newID = func() string { return "7b0e8a5c-8d2a-4c47-9a4c-5a3e2e0c1d11" }
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, "https://ob.bank.example/open-banking/v3.1/pisp/domestic-payment-consents", rd)
	for k, v := range hdr {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if err := s.Sign(req, body); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return req
}

// verifyOBJWS checks a detached JWS over body by hand: the RFC 7797 signing input when the header says
// "b64": false, the RFC 7515 one otherwise; PS256 with a 32-byte salt, ES256 as r||s. It returns the
// decoded protected header.
func verifyOBJWS(v string, body []byte, pub crypto.PublicKey) (string, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[1] != "" {
		return "", fmt.Errorf("%q is not a detached compact JWS", v)
	}
	hj, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	var h struct {
		Alg string `json:"alg"`
		B64 *bool  `json:"b64"`
	}
	if err := json.Unmarshal(hj, &h); err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	input := parts[0] + "."
	if h.B64 != nil && !*h.B64 {
		input += string(body)
	} else {
		input += base64.RawURLEncoding.EncodeToString(body)
	}
	d := sha256.Sum256([]byte(input))
	switch h.Alg {
	case "PS256":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return "", errors.New("PS256 with a key that is not RSA")
		}
		if err := rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}); err != nil {
			return "", fmt.Errorf("PS256: %w", err)
		}
	case "ES256":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok || len(sig) != 64 {
			return "", errors.New("ES256: not a P-256 key or not an r||s signature")
		}
		if !ecdsa.Verify(k, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return "", errors.New("ES256: signature does not verify")
		}
	default:
		return "", fmt.Errorf("alg %q", h.Alg)
	}
	return string(hj), nil
}

// The protected header, byte for byte, for each form the profile takes; each signature verifies over the
// body and not over a changed one.
func TestOBDetachedJWSHeader(t *testing.T) {
	p := getPKI(t)
	base := Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer}
	const crit4 = `"crit":["b64","http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"]`
	const crit3 = `"crit":["http://openbanking.org.uk/iat","http://openbanking.org.uk/iss","http://openbanking.org.uk/tan"]`
	iat := fmt.Sprint(obNow)
	claims := `"http://openbanking.org.uk/iat":` + iat + `,"http://openbanking.org.uk/iss":"` + obIssuer + `","http://openbanking.org.uk/tan":"openbanking.org.uk"`
	for _, tc := range []struct {
		name        string
		opts        func(o *Options)
		key         *tls.Certificate
		contentType string
		want        string
	}{
		{"v3.1.3 default: PS256, b64 false", nil, p.rsa, "application/json",
			`{"alg":"PS256","b64":false,` + crit4 + `,"cty":"application/json",` + claims + `,"kid":"kid-1","typ":"JOSE"}`},
		{"v3.1.4+: no b64 claim", func(o *Options) { o.JWSB64Claim = boolp(false) }, p.rsa, "application/json",
			`{"alg":"PS256",` + crit3 + `,"cty":"application/json",` + claims + `,"kid":"kid-1","typ":"JOSE"}`},
		{"ES256 for a P-256 key", nil, p.ecdsa, "application/json; charset=utf-8",
			`{"alg":"ES256","b64":false,` + crit4 + `,"cty":"application/json",` + claims + `,"kid":"kid-1","typ":"JOSE"}`},
		{"PS256 named", func(o *Options) { o.Algorithm = "PS256" }, p.rsa, "",
			`{"alg":"PS256","b64":false,` + crit4 + `,"cty":"application/json",` + claims + `,"kid":"kid-1","typ":"JOSE"}`},
		{"a payment file's media type", nil, p.rsa, "text/xml",
			`{"alg":"PS256","b64":false,` + crit4 + `,"cty":"text/xml",` + claims + `,"kid":"kid-1","typ":"JOSE"}`},
		{"kid and iss from the certificate, another trust anchor", func(o *Options) {
			o.KeyID, o.JWSIssuer, o.DNOrder, o.JWSTrustAnchor = "{serial}", "{subject}", DNOrderCertificate, "trust.example.com"
		}, p.rsa, "application/json",
			`{"alg":"PS256","b64":false,` + crit4 + `,"cty":"application/json","http://openbanking.org.uk/iat":` + iat + `,` +
				`"http://openbanking.org.uk/iss":"C=NO,O=Example TPP AS,CN=tpp.example","http://openbanking.org.uk/tan":"trust.example.com","kid":"6AEB4444FBAAD267","typ":"JOSE"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := base
			if tc.opts != nil {
				tc.opts(&opts)
			}
			body := []byte(obBody)
			req := obSign(t, opts, tc.key, http.MethodPost, tc.contentType, body, nil)
			v := req.Header.Get("x-jws-signature")
			got, err := verifyOBJWS(v, body, tc.key.Leaf.PublicKey)
			if err != nil {
				t.Fatalf("%v\nx-jws-signature: %s", err, v)
			}
			if got != tc.want {
				t.Fatalf("protected header\n got %s\nwant %s", got, tc.want)
			}
			if _, err := verifyOBJWS(v, append(body[:len(body):len(body)], ' '), tc.key.Leaf.PublicKey); err == nil {
				t.Fatal("the signature verifies over a changed body")
			}
			for _, h := range []string{"Digest", "Signature", "Date", "X-Request-Id"} {
				if req.Header.Get(h) != "" {
					t.Fatalf("the profile set %s", h)
				}
			}
		})
	}
}

// go-jose parses the header and, for the unencoded payload, computes the same RFC 7797 signing input;
// it does not verify the signature itself because it refuses any critical header it does not know
// (it knows b64 alone), and the Open Banking claims are critical. The signature is verified by hand above
// and with Node's jose below.
func TestOBDetachedJWSGoJose(t *testing.T) {
	p := getPKI(t)
	body := []byte(obBody)
	req := obSign(t, Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer}, p.rsa, http.MethodPost, "application/json", body, nil)
	obj, err := jose.ParseDetached(req.Header.Get("x-jws-signature"), body, []jose.SignatureAlgorithm{jose.PS256})
	if err != nil {
		t.Fatalf("go-jose: %v", err)
	}
	h := obj.Signatures[0].Protected
	if h.KeyID != "kid-1" || h.Algorithm != "PS256" || h.ExtraHeaders["b64"] != false ||
		h.ExtraHeaders[ClaimOBIssuer] != obIssuer || h.ExtraHeaders[ClaimOBTrustAnchor] != DefaultTrustAnchor {
		t.Fatalf("header as go-jose reads it: %+v", h)
	}
	if err := obj.DetachedVerify(body, &p.rsa.Leaf.PublicKey); err == nil {
		t.Fatal("go-jose now verifies the Open Banking critical claims; verify with it here")
	}
}

// Only requests with a body are signed; a GET carries no x-jws-signature, an empty POST is signed.
func TestOBDetachedJWSOnlyBodies(t *testing.T) {
	p := getPKI(t)
	opts := Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer}
	for _, tc := range []struct {
		method string
		body   []byte
		signed bool
	}{
		{http.MethodGet, nil, false},
		{http.MethodDelete, nil, false},
		{http.MethodPost, []byte(obBody), true},
		{http.MethodPut, []byte(obBody), true},
		{http.MethodPatch, []byte(obBody), true},
		{http.MethodPost, nil, true},
	} {
		t.Run(fmt.Sprintf("%s %d bytes", tc.method, len(tc.body)), func(t *testing.T) {
			req := obSign(t, opts, p.rsa, tc.method, "", tc.body, nil)
			v := req.Header.Get("x-jws-signature")
			if (v != "") != tc.signed {
				t.Fatalf("x-jws-signature %q; want signed=%v", v, tc.signed)
			}
			if tc.signed {
				if _, err := verifyOBJWS(v, tc.body, p.rsa.Leaf.PublicKey); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// x-fapi-interaction-id: an app's UUID passes; anything else is replaced by a new UUID v4.
func TestInteractionID(t *testing.T) {
	p := getPKI(t)
	const generated = "7b0e8a5c-8d2a-4c47-9a4c-5a3e2e0c1d11"
	ob := Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer}
	for _, tc := range []struct {
		name string
		opts Options
		sent []string
		want string // "" for no header
	}{
		{"generated when absent", ob, nil, generated},
		{"a UUID passes", ob, []string{"93bac548-d2de-4546-b106-880a5018460d"}, "93bac548-d2de-4546-b106-880a5018460d"},
		{"an upper-case UUID passes", ob, []string{"93BAC548-D2DE-4546-B106-880A5018460D"}, "93BAC548-D2DE-4546-B106-880A5018460D"},
		{"not a UUID", ob, []string{"req-42"}, generated},
		{"a UUID without hyphens", ob, []string{"93bac548d2de4546b106880a5018460d"}, generated},
		{"a URN", ob, []string{"urn:uuid:93bac548-d2de-4546-b106-880a5018460d"}, generated},
		{"two values", ob, []string{"93bac548-d2de-4546-b106-880a5018460d", "93bac548-d2de-4546-b106-880a5018460e"}, generated},
		{"off on ob-detached-jws", func() Options { o := ob; o.InteractionID = boolp(false); return o }(), nil, ""},
		{"off by default on berlin-group", Options{Profile: ProfileBerlinGroup}, nil, ""},
		{"on for berlin-group", Options{Profile: ProfileBerlinGroup, InteractionID: boolp(true)}, []string{"x"}, generated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.sent != nil {
				hdr[HeaderInteractionID] = tc.sent
			}
			req := obSign(t, tc.opts, p.rsa, http.MethodGet, "", nil, hdr)
			got := req.Header.Values("x-fapi-interaction-id")
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("x-fapi-interaction-id %q; want none", got)
				}
				return
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("x-fapi-interaction-id %q; want %q", got, tc.want)
			}
		})
	}
	// The production generator makes UUIDs v4.
	s, err := New(ob, StaticKey{p.rsa})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "https://ob.bank.example/x", nil)
	if err := s.Sign(req, nil); err != nil {
		t.Fatal(err)
	}
	if id, err := uuid.Parse(req.Header.Get(HeaderInteractionID)); err != nil || id.Version() != 4 {
		t.Fatalf("generated id %q: %v", req.Header.Get(HeaderInteractionID), err)
	}
}

func TestOBDetachedJWSValidate(t *testing.T) {
	p := getPKI(t)
	now := time.Now()
	ob := func(f func(o *Options)) Options {
		o := Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer}
		if f != nil {
			f(&o)
		}
		return o
	}
	for _, tc := range []struct {
		name string
		opts Options
		key  *tls.Certificate
		want string
	}{
		{"ok", ob(nil), p.rsa, ""},
		{"ok without a certificate", ob(nil), p.rsaNoCert, ""},
		{"ES256 ok", ob(func(o *Options) { o.Algorithm = "ES256" }), p.ecdsa, ""},
		{"RS256 refused", ob(func(o *Options) { o.Algorithm = "RS256" }), p.rsa, "signing.algorithm: RS256 is not allowed for Open Banking message signing, which requires PS256"},
		{"unknown algorithm", ob(func(o *Options) { o.Algorithm = "rsa-sha256" }), p.rsa, `signing.algorithm: unknown algorithm "rsa-sha256" for profile ob-detached-jws; use PS256 or ES256`},
		{"ES256 with an RSA key", ob(func(o *Options) { o.Algorithm = "ES256" }), p.rsa, "signing.algorithm: ES256 needs an ECDSA P-256 key, not an RSA key"},
		{"PS256 with a P-256 key", ob(func(o *Options) { o.Algorithm = "PS256" }), p.ecdsa, "signing.algorithm: PS256 needs an RSA key"},
		{"Ed25519 key", ob(nil), p.ed25519, "signing.key: the signing key cannot sign a JWS"},
		{"no key_id", ob(func(o *Options) { o.KeyID = "" }), p.rsa, "signing.key_id: required for profile ob-detached-jws"},
		{"no jws_issuer", ob(func(o *Options) { o.JWSIssuer = "" }), p.rsa, "signing.jws_issuer: required for profile ob-detached-jws"},
		{"bad jws_issuer placeholder", ob(func(o *Options) { o.JWSIssuer = "{org_id}" }), p.rsa, "signing.jws_issuer: unknown placeholder {org_id}"},
		{"jws_issuer from a missing certificate", ob(func(o *Options) { o.JWSIssuer = "{subject}" }), p.rsaNoCert, `signing.jws_issuer: "{subject}" needs a signing certificate`},
		{"bad trust anchor", ob(func(o *Options) { o.JWSTrustAnchor = "https://openbanking.org.uk/" }), p.rsa, "signing.jws_trust_anchor"},
		{"digest", ob(func(o *Options) { o.Digest = "SHA-256" }), p.rsa, "signing.digest: not used by profile ob-detached-jws"},
		{"headers", ob(func(o *Options) { o.Headers = []string{"date"} }), p.rsa, "signing.headers: not used by profile ob-detached-jws"},
		{"jws_issuer elsewhere", Options{Profile: ProfileRFC9421, KeyID: "k", JWSIssuer: "x"}, p.rsa, "signing.jws_issuer: only for profile ob-detached-jws"},
		{"jws_b64_claim elsewhere", Options{Profile: ProfileBerlinGroup, JWSB64Claim: boolp(true)}, p.rsa, "signing.jws_b64_claim: only for profile ob-detached-jws"},
		{"expired certificate", ob(nil), p.expired, "signing.certificate: the signing certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate(tc.key, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ve *ValidationError
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &ve) {
				t.Fatalf("error %v\nwant a *ValidationError containing %q", err, tc.want)
			}
		})
	}
	o := ob(nil)
	got, err := o.OwnedHeaders()
	if err != nil || !reflect.DeepEqual(got, []string{"X-Jws-Signature"}) {
		t.Fatalf("OwnedHeaders = %q, %v; want [X-Jws-Signature]", got, err)
	}
}
