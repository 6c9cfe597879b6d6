package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
)

// TestCavageAppendixC reproduces draft-cavage-http-signatures-10 Appendix C byte for byte.
func TestCavageAppendixC(t *testing.T) {
	files := readArchive(t, "testdata/draft-cavage-http-signatures-10-appendix-c.txtar")
	key := parsePrivateKey(t, files["private.pem"])
	pub := parsePublicKey(t, files["public.pem"])
	if !key.Public().(*rsa.PublicKey).Equal(pub) {
		t.Fatal("Appendix C private and public keys do not match")
	}
	for _, tc := range []string{"c1", "c2", "c3"} {
		t.Run(tc, func(t *testing.T) {
			req, body := readRequest(t, files["request.http"])
			headers := strings.Fields(one(t, files, tc+".headers"))
			s, err := newSigner(Options{Profile: ProfileCustom, KeyID: "Test", Headers: headers},
				StaticKey{&tls.Certificate{PrivateKey: key}}, fixedClock(1388957500))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			wantDigest := req.Header.Get("Digest")
			if err := s.Sign(req, body); err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if got := req.Header.Get("Digest"); got != wantDigest {
				t.Errorf("Digest = %q, draft has %q", got, wantDigest)
			}
			if got := req.Header.Get("Date"); got != "Sun, 05 Jan 2014 21:31:40 GMT" {
				t.Errorf("Date was replaced: %q", got)
			}
			ss, err := AppendSigningString(nil, req, body, headers)
			if err != nil {
				t.Fatal(err)
			}
			if want := one(t, files, tc+".signing-string"); string(ss) != want {
				t.Errorf("signing string\n got: %q\nwant: %q", ss, want)
			}
			if got, want := req.Header.Get("Signature"), one(t, files, tc+".signature"); got != want {
				t.Errorf("Signature\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

// TestCavageSection23 is the section 2.3 example: repeated headers joined, obs-fold replaced by a space.
func TestCavageSection23(t *testing.T) {
	files := readArchive(t, "testdata/draft-cavage-http-signatures-10-appendix-c.txtar")
	want := one(t, files, "section-2.3.signing-string")
	headers := strings.Fields(one(t, files, "section-2.3.headers"))

	// As parsed by net/http (which unfolds obs-fold itself).
	req, body := readRequest(t, files["section-2.3.request.http"])
	got, err := AppendSigningString(nil, req, body, headers)
	if err != nil || string(got) != want {
		t.Fatalf("parsed request: got %q, %v; want %q", got, err, want)
	}
	// With the fold kept in the value, as a client could hand it to us.
	req.Header["X-Example"] = []string{"Example header\r\n    with some whitespace."}
	got, err = AppendSigningString(nil, req, body, headers)
	if err != nil || string(got) != want {
		t.Fatalf("folded value: got %q, %v; want %q", got, err, want)
	}
}

func rfcSigValue(t *testing.T, member string) []byte {
	t.Helper()
	i := strings.Index(member, "=:")
	if i < 0 || !strings.HasSuffix(member, ":") {
		t.Fatalf("not a signature member: %q", member)
	}
	b, err := base64.StdEncoding.DecodeString(member[i+2 : len(member)-1])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC9421Reproduce reproduces the deterministic RFC 9421 examples through Sign.
func TestRFC9421Reproduce(t *testing.T) {
	files := readArchive(t, "testdata/rfc9421-examples.txtar")
	edKey := parsePrivateKey(t, files["test-key-ed25519.pem"])
	if !edKey.Public().(ed25519.PublicKey).Equal(parsePublicKey(t, files["test-key-ed25519.pub.pem"])) {
		t.Fatal("test-key-ed25519 halves do not match")
	}
	secret, err := base64.StdEncoding.DecodeString(one(t, files, "test-shared-secret.b64"))
	if err != nil {
		t.Fatal(err)
	}
	no := false
	for _, tc := range []struct {
		name, keyID, alg string
		hmac             bool
	}{
		{name: "b25", keyID: "test-shared-secret", hmac: true},
		{name: "b26", keyID: "test-key-ed25519", alg: "ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, body := readRequest(t, files["test-request.http"])
			wantCD := req.Header.Get("Content-Digest")
			opts := Options{Profile: ProfileRFC9421, Algorithm: tc.alg, KeyID: tc.keyID, Digest: "SHA-512",
				Headers: strings.Fields(one(t, files, tc.name+".components")), Label: "sig-" + tc.name, IncludeAlg: &no}
			s, err := newSigner(opts, StaticKey{&tls.Certificate{PrivateKey: edKey}}, fixedClock(1618884473))
			if err != nil {
				t.Fatal(err)
			}
			if tc.hmac {
				// hmac-sha256 needs a shared secret, which a crypto.Signer key source cannot carry; the
				// test swaps the signature step and keeps everything else (base, parameters, headers).
				s.signFn = func(msg []byte) ([]byte, error) {
					m := hmac.New(sha256.New, secret)
					m.Write(msg)
					return m.Sum(nil), nil
				}
			}
			if err := s.Sign(req, body); err != nil {
				t.Fatal(err)
			}
			if got := req.Header.Get("Content-Digest"); got != wantCD {
				t.Errorf("Content-Digest = %q, RFC has %q", got, wantCD)
			}
			if got, want := req.Header.Get("Signature-Input"), one(t, files, tc.name+".signature-input"); got != want {
				t.Errorf("Signature-Input\n got: %s\nwant: %s", got, want)
			}
			if got, want := req.Header.Get("Signature"), one(t, files, tc.name+".signature"); got != want {
				t.Errorf("Signature\n got: %s\nwant: %s", got, want)
			}
			base, _, err := AppendSignatureBase(nil, req, body, opts.Headers, func(b []byte) []byte {
				return append(b, strings.TrimPrefix(req.Header.Get("Signature-Input"), opts.Label+"=")...)
			})
			if err != nil || string(base) != one(t, files, tc.name+".base") {
				t.Errorf("signature base\n got: %q (%v)\nwant: %q", base, err, one(t, files, tc.name+".base"))
			}
		})
	}
}

// TestRFC9421RSAv15 reproduces the rsa-v1_5-sha256 signature of RFC 9421 section 4.3 (the proxy signature):
// the parameters are serialized by our code and the published base is signed with our algorithm.
// Our engine does not cover other signatures ("signature";key=...), so the base's component lines are
// taken from the RFC.
func TestRFC9421RSAv15(t *testing.T) {
	files := readArchive(t, "testdata/rfc9421-examples.txtar")
	key := parsePrivateKey(t, files["test-key-rsa.pem"])
	if !key.Public().(*rsa.PublicKey).Equal(parsePublicKey(t, files["test-key-rsa.pub.pem"])) {
		t.Fatal("test-key-rsa halves do not match")
	}
	base := one(t, files, "s43.proxy.base")
	i := strings.LastIndex(base, `"@signature-params": `)
	params := appendSignatureParams(nil, []string{`signature";key="sig1`, "forwarded"}, 1618884480, 1618884540,
		newKeyState(&plan{includeAlg: true}, nil, key, nil, algRSAv15SHA256, "test-key-rsa").sigStart)
	if got, want := string(params), base[i+len(`"@signature-params": `):]; got != want {
		t.Errorf("signature params\n got: %s\nwant: %s", got, want)
	}
	sig, err := algRSAv15SHA256.sign(key, []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := base64.StdEncoding.EncodeToString(sig), one(t, files, "s43.proxy.signature"); got != want {
		t.Errorf("signature\n got: %s\nwant: %s", got, want)
	}
}

// TestRFC9421Verify checks the non-deterministic examples: the published signatures verify against the
// signature base our code builds (B.2.3) or, for features we do not emit (nonce, @query-param, responses),
// against the published base, which checks the keys.
func TestRFC9421Verify(t *testing.T) {
	files := readArchive(t, "testdata/rfc9421-examples.txtar")
	pss := parsePublicKey(t, files["test-key-rsa-pss.pub.pem"]).(*rsa.PublicKey)
	ec := parsePublicKey(t, files["test-key-ecc-p256.pub.pem"]).(*ecdsa.PublicKey)
	if !parsePrivateKey(t, files["test-key-ecc-p256.pem"]).Public().(*ecdsa.PublicKey).Equal(ec) {
		t.Fatal("test-key-ecc-p256 halves do not match")
	}
	verifyPSS := func(base string, sig []byte) error {
		d := sha512.Sum512([]byte(base))
		return rsa.VerifyPSS(pss, crypto.SHA512, d[:], sig, &rsa.PSSOptions{SaltLength: 64, Hash: crypto.SHA512})
	}

	t.Run("b23 base built by us", func(t *testing.T) {
		req, body := readRequest(t, files["test-request.http"])
		comps := strings.Fields(one(t, files, "b23.components"))
		input := strings.TrimPrefix(one(t, files, "b23.signature-input"), "sig-b23=")
		base, _, err := AppendSignatureBase(nil, req, body, comps, func(b []byte) []byte { return append(b, input...) })
		if err != nil {
			t.Fatal(err)
		}
		if string(base) != one(t, files, "b23.base") {
			t.Errorf("base\n got: %q\nwant: %q", base, one(t, files, "b23.base"))
		}
		if err := verifyPSS(string(base), rfcSigValue(t, one(t, files, "b23.signature"))); err != nil {
			t.Errorf("published sig-b23 does not verify over our base: %v", err)
		}
	})
	for _, n := range []string{"b21", "b22"} {
		t.Run(n+" published base", func(t *testing.T) {
			if err := verifyPSS(one(t, files, n+".base"), rfcSigValue(t, one(t, files, n+".signature"))); err != nil {
				t.Errorf("published %s does not verify: %v", n, err)
			}
		})
	}
	t.Run("b24 published base", func(t *testing.T) {
		raw := rfcSigValue(t, one(t, files, "b24.signature"))
		d := sha256.Sum256([]byte(one(t, files, "b24.base")))
		var r, s = new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
		if !ecdsa.Verify(ec, d[:], r, s) {
			t.Error("published sig-b24 does not verify")
		}
	})
}
