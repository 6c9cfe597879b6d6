package assemble

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseSigner(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	p8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	cert := pemOf("CERTIFICATE", []byte{1, 2, 3})
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"pkcs8 ec", pemOf("PRIVATE KEY", p8), ""},
		{"sec1 ec after a certificate", append(cert, pemOf("EC PRIVATE KEY", sec1)...), ""},
		{"pkcs1 rsa", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), ""},
		{"no key", cert, "no PEM private key"},
		{"not PEM", []byte("-----BEGIN nonsense"), "no PEM private key"},
		{"corrupt key", pemOf("PRIVATE KEY", []byte{0x30, 0x01}), "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSigner(tc.in)
			switch {
			case tc.err == "" && (err != nil || s == nil):
				t.Fatalf("err = %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// FuzzParseSigner: any input is either a usable signer or an error that
// quotes nothing of the input.
func FuzzParseSigner(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p8, _ := x509.MarshalPKCS8PrivateKey(ec)
	f.Add(pemOf("PRIVATE KEY", p8))
	f.Add(pemOf("EC PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x01}))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := parseSigner(in)
		if err == nil && (s == nil || s.Public() == nil) {
			t.Fatal("no error and no signer")
		}
		if err != nil && len(in) > 8 && strings.Contains(err.Error(), string(in)) {
			t.Fatal("the error quotes the input")
		}
	})
}
