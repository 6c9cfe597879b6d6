package fapitest

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// TestVerifyDetachedJWS checks detached JWS made by internal/jws with Node's
// jose: UK Open Banking's x-jws-signature shape (b64 false, crit), PS256 and
// ES256, keys given as a public key, a JWK, a certificate and a PEM.
func TestVerifyDetachedJWS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs node")
	}
	ca, err := pki.NewCA("signing CA")
	if err != nil {
		t.Fatal(err)
	}
	rsaK, ecK := rsaKey(t), ecKey(t)
	rsaCert, err := ca.CertifyKey("tpp signing", rsaK.Public())
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"Data":{"Initiation":{"InstructedAmount":{"Amount":"10.00","Currency":"GBP"}}},"Risk":{}}` + "\n")
	header := map[string]any{
		"kid": "k1", "b64": false, "typ": "JOSE", "cty": "application/json",
		"http://openbanking.org.uk/iat": time.Now().Unix(),
		"http://openbanking.org.uk/iss": "0015800001041REAAY/tpp",
		"http://openbanking.org.uk/tan": "openbanking.org.uk",
		"crit":                          []string{"b64", "http://openbanking.org.uk/iat", "http://openbanking.org.uk/iss", "http://openbanking.org.uk/tan"},
	}
	spki, err := x509.MarshalPKIXPublicKey(ecK.Public())
	if err != nil {
		t.Fatal(err)
	}
	ecJWK, err := jws.JWK(ecK.Public())
	if err != nil {
		t.Fatal(err)
	}
	psSig, err := jws.SignDetachedUnencoded(rsaK, jws.PS256, header, body)
	if err != nil {
		t.Fatal(err)
	}
	esSig, err := jws.SignDetachedUnencoded(ecK, jws.ES256, header, body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		sig  string
		body []byte
		key  any
		fail string
	}{
		{"PS256/certificate", psSig, body, rsaCert, ""},
		{"PS256/public key", psSig, body, rsaK.Public(), ""},
		{"ES256/JWK", esSig, body, ecJWK, ""},
		{"ES256/PEM", esSig, body, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), ""},
		{"body changed", psSig, append([]byte(" "), body...), rsaCert, "signature verification failed"},
		{"other key", esSig, body, ecKey(t).Public(), "signature verification failed"},
		{"not detached", strings.Replace(esSig, "..", ".e30.", 1), body, ecJWK, "not a detached JWS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyDetachedJWS(t, tc.sig, tc.body, tc.key)
			switch {
			case tc.fail == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
				t.Fatalf("error %v, want %q", err, tc.fail)
			}
		})
	}

	// An unknown critical header is refused, as RFC 7515 §4.1.11 requires.
	h := map[string]any{"b64": false, "crit": []string{"b64", "urn:example:unknown"}, "urn:example:unknown": 1}
	sig, err := jws.SignDetachedUnencoded(ecK, jws.ES256, h, body)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyDetachedJWS(t, sig, body, ecK.Public()); err == nil || !strings.Contains(err.Error(), "not recognized") {
		t.Fatalf("unknown crit: %v", err)
	}
}
