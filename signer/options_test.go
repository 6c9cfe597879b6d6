package signer

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	p := getPKI(t)
	now := time.Now()
	mismatched := &tls.Certificate{Certificate: p.rsa.Certificate, Leaf: p.rsa.Leaf, PrivateKey: p.otherRSA}
	notYet := issue(t, p.ca, p.otherRSA, nil, now.Add(time.Hour), now.Add(48*time.Hour))
	for _, tc := range []struct {
		name string
		opts Options
		key  *tls.Certificate
		want string // substring of the error; "" for none
	}{
		{"berlin-group ok", Options{Profile: ProfileBerlinGroup}, p.rsa, ""},
		{"stet ok", Options{Profile: ProfileSTET, KeyID: "https://tpp.example/qsealc.pem"}, p.rsa, ""},
		{"rfc9421 ecdsa ok", Options{Profile: ProfileRFC9421, KeyID: "k1"}, p.ecdsa, ""},
		{"rfc9421 key without certificate", Options{Profile: ProfileRFC9421, KeyID: "{public_key}"}, p.rsaNoCert, ""},
		{"no profile", Options{}, p.rsa, "signing.profile: required"},
		{"unknown profile", Options{Profile: "psd2"}, p.rsa, `signing.profile: unknown profile "psd2"; use one of berlin-group, stet, custom, rfc9421, ob-detached-jws`},
		{"stet without key_id", Options{Profile: ProfileSTET}, p.rsa, "signing.key_id: required for profile stet"},
		{"custom without headers", Options{Profile: ProfileCustom, KeyID: "x"}, p.rsa, "signing.headers: required for profile custom"},
		{"custom without key_id", Options{Profile: ProfileCustom, Headers: []string{"date"}}, p.rsa, "signing.key_id: required for profile custom"},
		{"rfc9421 without key_id", Options{Profile: ProfileRFC9421}, p.rsa, "signing.key_id: required for profile rfc9421"},
		{"rsa algorithm on ECDSA key", Options{Profile: ProfileBerlinGroup}, p.ecdsa,
			`signing.algorithm: "rsa-sha256" needs an RSA key but the signing key is ECDSA P-256; use "ecdsa-p256-sha256" with profile rfc9421 or an RSA key`},
		{"ed25519 algorithm on RSA key", Options{Profile: ProfileRFC9421, KeyID: "k", Algorithm: "ed25519"}, p.rsa,
			`signing.algorithm: "ed25519" needs an Ed25519 key but the signing key is RSA-2048`},
		{"unknown cavage algorithm", Options{Profile: ProfileBerlinGroup, Algorithm: "rsa-v1_5-sha256"}, p.rsa,
			`signing.algorithm: unknown algorithm "rsa-v1_5-sha256" for profile berlin-group; use rsa-sha256 or rsa-sha512; "rsa-v1_5-sha256" is an RFC 9421 algorithm`},
		{"key does not match certificate", Options{Profile: ProfileBerlinGroup}, mismatched,
			"signing.key: the signing key (RSA-2048) does not belong to the signing certificate"},
		{"expired certificate", Options{Profile: ProfileBerlinGroup}, p.expired, "signing.certificate: the signing certificate \"CN=tpp.example,O=Example TPP AS,C=NO\" expired on"},
		{"not yet valid certificate", Options{Profile: ProfileBerlinGroup}, notYet, "signing.certificate: the signing certificate \"CN=tpp.example,O=Example TPP AS,C=NO\" is not valid before"},
		{"berlin-group needs a certificate", Options{Profile: ProfileBerlinGroup}, p.rsaNoCert, "signing.key_id: \"SN={serial},CA={issuer}\" needs a signing certificate"},
		{"no key", Options{Profile: ProfileBerlinGroup}, &tls.Certificate{}, "signing.key: no signing key is loaded"},
		{"headers on fixed profile", Options{Profile: ProfileBerlinGroup, Headers: []string{"date"}}, p.rsa, "signing.headers: profile berlin-group fixes the covered headers"},
		{"bad digest", Options{Profile: ProfileBerlinGroup, Digest: "MD5"}, p.rsa, `signing.digest: unknown digest "MD5"; use SHA-256 or SHA-512`},
		{"bad key_id placeholder", Options{Profile: ProfileSTET, KeyID: "{fingerprint}"}, p.rsa, "signing.key_id: unknown placeholder {fingerprint}"},
		{"bad header name", Options{Profile: ProfileCustom, KeyID: "x", Headers: []string{"date", "x y"}}, p.rsa, `signing.headers[1]: "x y" is not a valid header name`},
		{"duplicate header", Options{Profile: ProfileCustom, KeyID: "x", Headers: []string{"date", "Date"}}, p.rsa, `signing.headers[1]: "Date" is listed twice`},
		{"unsupported component", Options{Profile: ProfileRFC9421, KeyID: "x", Headers: []string{"@status"}}, p.rsa, `signing.headers[0]: unsupported derived component "@status"`},
		{"label on cavage", Options{Profile: ProfileBerlinGroup, Label: "x"}, p.rsa, "signing.label: only for profile rfc9421"},
		{"bad label", Options{Profile: ProfileRFC9421, KeyID: "x", Label: "Sig"}, p.rsa, `signing.label: "Sig" is not a structured-field key`},
		{"bad serial format", Options{Profile: ProfileBerlinGroup, SerialFormat: "HEX"}, p.rsa, `signing.serial_format: unknown format "HEX"`},
		{"bad dn order", Options{Profile: ProfileBerlinGroup, DNOrder: "ldap"}, p.rsa, `signing.dn_order: unknown order "ldap"`},
		{"certificate header without certificate", Options{Profile: ProfileRFC9421, KeyID: "x", CertificateHeader: "X-Cert"}, p.rsaNoCert,
			"signing.certificate_header: X-Cert needs a signing certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate(tc.key, now)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if _, err := New(tc.opts, StaticKey{tc.key}); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is %T, want *ValidationError", err)
			}
			if _, err := New(tc.opts, StaticKey{tc.key}); err == nil {
				t.Fatal("New accepted what Validate rejects")
			}
		})
	}
}

// TestRotation shows that a new key is picked up on the next Sign and that a bad one fails only its
// own requests.
func TestRotation(t *testing.T) {
	p := getPKI(t)
	keys := &swapKey{}
	keys.Store(p.rsa)
	s, err := New(Options{Profile: ProfileBerlinGroup}, keys)
	if err != nil {
		t.Fatal(err)
	}
	sign := func() (*http.Request, error) {
		r := httptest.NewRequest(http.MethodGet, "https://bank.example/v1/accounts", nil)
		return r, s.Sign(r, nil)
	}
	r, err := sign()
	if err != nil || !strings.Contains(r.Header.Get("Signature"), "SN=6AEB4444FBAAD267,") {
		t.Fatalf("first key: %v %q", err, r.Header.Get("Signature"))
	}
	keys.Store(p.rsaOther)
	r, err = sign()
	if err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if v, err := DecodeRFC2047(r.Header.Get("Signature")); err != nil || !strings.HasPrefix(v, `keyId="SN=A0B,CA=`) {
		t.Fatalf("rotated key: %v %q", err, v)
	}
	keys.Store(p.ecdsa)
	if _, err = sign(); err == nil || !strings.Contains(err.Error(), "signing.algorithm") {
		t.Fatalf("ECDSA key on berlin-group: %v", err)
	}
	keys.Store(p.rsa)
	if _, err = sign(); err != nil {
		t.Fatalf("back to the first key: %v", err)
	}
}
