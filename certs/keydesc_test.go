package certs_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/tokenproxy/tokenproxy/certs"
)

func TestKeyDescription(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		want string
	}{
		{"rsa", &rsaKey.PublicKey, "RSA-2048"},
		{"ecdsa", &p384.PublicKey, "ECDSA P-384"},
		{"ed25519", edPub, "Ed25519"},
		{"nil", nil, "missing"},
		{"unsupported", x25519.PublicKey(), "*ecdh.PublicKey"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := certs.KeyDescription(tc.pub); got != tc.want {
				t.Fatalf("KeyDescription = %q, want %q", got, tc.want)
			}
		})
	}
}
