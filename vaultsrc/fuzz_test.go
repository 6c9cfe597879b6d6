package vaultsrc

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func FuzzDecodeTransitSignature(f *testing.F) {
	for _, s := range []string{"vault:v1:aGVsbG8=", "vault:v12:", "vault:", "aGVsbG8=", "vault:v1:a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := decodeTransitSignature(s)
		if err != nil {
			return
		}
		// Whatever decodes must round-trip to the base64 after the second colon.
		i := bytes.IndexByte([]byte(s[6:]), ':') + 6
		if base64.StdEncoding.EncodeToString(b) != strings.NewReplacer("\r", "", "\n", "").Replace(s[i+1:]) {
			t.Fatalf("%q decoded to %x", s, b)
		}
	})
}

func FuzzParseTransitPublicKey(f *testing.F) {
	f.Add("ed25519", "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add("rsa-2048", "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n")
	f.Add("ecdsa-p256", "not pem")
	f.Fuzz(func(t *testing.T, typ, s string) {
		_, _ = parseTransitPublicKey(typ, s) // must not panic
	})
}

func FuzzDecodeBase64(f *testing.F) {
	f.Add("aGVs\nbG8=")
	f.Add("aGVsbG8")
	f.Fuzz(func(t *testing.T, s string) { _, _ = decodeBase64(s) })
}
