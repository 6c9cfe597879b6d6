package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func keys(t *testing.T) (ec *ecdsa.PrivateKey, rk *rsa.PrivateKey) {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err = rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return ec, rk
}

// TestSignVerifiesWithGoJose checks each algorithm against an independent
// JOSE implementation, which refuses a PS256 signature whose salt is not the
// hash's length.
func TestSignVerifiesWithGoJose(t *testing.T) {
	ec, rk := keys(t)
	for _, tc := range []struct {
		alg string
		key crypto.Signer
		ja  jose.SignatureAlgorithm
	}{
		{ES256, ec, jose.ES256},
		{PS256, rk, jose.PS256},
		{RS256, rk, jose.RS256},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			tok, err := SignJSON(tc.key, tc.alg, map[string]any{"typ": "dpop+jwt"}, map[string]any{"jti": "x"})
			if err != nil {
				t.Fatal(err)
			}
			obj, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{tc.ja})
			if err != nil {
				t.Fatal(err)
			}
			got, err := obj.Verify(tc.key.Public())
			if err != nil {
				t.Fatalf("go-jose refuses the %s signature: %v", tc.alg, err)
			}
			if string(got) != `{"jti":"x"}` {
				t.Fatalf("payload %s", got)
			}
			if obj.Signatures[0].Protected.ExtraHeaders["typ"] != "dpop+jwt" {
				t.Fatalf("header %+v", obj.Signatures[0].Protected)
			}
		})
	}
}

func TestPS256SaltIsHashLength(t *testing.T) {
	_, rk := keys(t)
	sig, err := SignInput(rk, PS256, []byte("a.b"))
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("a.b"))
	if err := rsa.VerifyPSS(&rk.PublicKey, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Fatalf("salt is not 32 bytes: %v", err)
	}
}

func TestDetachedUnencoded(t *testing.T) {
	_, rk := keys(t)
	body := []byte(`{"Data":{"amount":"1.00"}}`)
	hdr := map[string]any{"b64": false, "crit": []string{"b64"}, "kid": "k1"}
	det, err := SignDetachedUnencoded(rk, PS256, hdr, body)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(det, ".")
	if len(parts) != 3 || parts[1] != "" {
		t.Fatalf("not detached: %q", det)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil || h["alg"] != "PS256" || h["b64"] != false {
		t.Fatalf("header %s", raw)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	d := sha256.Sum256(append([]byte(parts[0]+"."), body...))
	if err := rsa.VerifyPSS(&rk.PublicKey, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Fatalf("detached signature does not verify over header.body: %v", err)
	}
	if _, err := SignDetachedUnencoded(rk, PS256, map[string]any{}, body); err == nil {
		t.Fatal("b64 missing accepted")
	}
}

func TestThumbprintMatchesGoJose(t *testing.T) {
	ec, rk := keys(t)
	for _, pub := range []crypto.PublicKey{ec.Public(), rk.Public()} {
		got, err := Thumbprint(pub)
		if err != nil {
			t.Fatal(err)
		}
		want, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if got != base64.RawURLEncoding.EncodeToString(want) {
			t.Fatalf("thumbprint %s, go-jose %s", got, base64.RawURLEncoding.EncodeToString(want))
		}
	}
}

func TestCheckAlg(t *testing.T) {
	ec, rk := keys(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // a key too small on purpose: CheckAlg must refuse it
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		alg  string
		pub  crypto.PublicKey
		want string
	}{
		{ES256, ec.Public(), ""},
		{ES256, rk.Public(), "needs an ECDSA P-256 key"},
		{ES256, p384.Public(), "needs an ECDSA P-256 key"},
		{PS256, rk.Public(), ""},
		{PS256, ec.Public(), "needs an RSA key"},
		{PS256, small.Public(), "at least 2048 bits"},
		{"HS256", rk.Public(), "not one of"},
	} {
		err := CheckAlg(tc.pub, tc.alg)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckAlg(%s) = %v, want %q", tc.alg, err, tc.want)
		}
	}
}

func TestECDSARaw(t *testing.T) {
	ec, _ := keys(t)
	d := sha256.Sum256([]byte("x"))
	der, _ := ec.Sign(rand.Reader, d[:], crypto.SHA256)
	raw, err := ecdsaRaw(der)
	if err != nil {
		t.Fatal(err)
	}
	r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
	if !ecdsa.Verify(&ec.PublicKey, d[:], r, s) {
		t.Fatal("r||s does not verify")
	}
	if again, err := ecdsaRaw(raw); err != nil || string(again) != string(raw) {
		t.Fatal("an r||s signature is not kept as it is")
	}
	if _, err := ecdsaRaw([]byte{0x30, 1, 2}); err == nil {
		t.Fatal("malformed DER accepted")
	}
}

func TestChoose(t *testing.T) {
	ec, rk := keys(t)
	for _, tc := range []struct {
		pub       crypto.PublicKey
		alg, want string
		pss, err  bool
	}{
		{ec.Public(), "", ES256, false, false},
		{rk.Public(), "", RS256, false, false},
		{rk.Public(), "", PS256, true, false},
		{rk.Public(), PS256, PS256, false, false},
		{ec.Public(), PS256, "", false, true},
	} {
		got, err := Choose(tc.pub, tc.alg, tc.pss)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Choose(%T, %q) = %q, %v; want %q (error %v)", tc.pub, tc.alg, got, err, tc.want, tc.err)
		}
	}
}

func TestClaims(t *testing.T) {
	ec, _ := keys(t)
	tok, err := SignJSON(ec, ES256, nil, map[string]any{"nonce": "n1", "cnf": map[string]string{"jkt": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Nonce string
		Cnf   struct{ JKT string }
	}
	if err := Claims(tok, &c); err != nil || c.Nonce != "n1" || c.Cnf.JKT != "k" {
		t.Fatalf("Claims = %+v, %v", c, err)
	}
	for _, bad := range []string{"opaque-token", "a.b", "a.!!!.c", "a." + B64([]byte("not json")) + ".c"} {
		if err := Claims(bad, &c); err == nil {
			t.Errorf("Claims(%q) accepted", bad)
		}
	}
}
