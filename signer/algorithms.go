package signer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// keyKind names the kind of public key an algorithm needs.
type keyKind int

const (
	keyRSA keyKind = iota + 1
	keyECDSAP256
	keyEd25519
)

func (k keyKind) String() string {
	switch k {
	case keyRSA:
		return "RSA"
	case keyECDSAP256:
		return "ECDSA P-256"
	case keyEd25519:
		return "Ed25519"
	}
	return "unknown"
}

// algorithm is one signature algorithm as a profile names it.
type algorithm struct {
	name string
	kind keyKind
	// hash is the prehash applied before the key signs; 0 for Ed25519, which signs the message itself.
	hash crypto.Hash
	opts crypto.SignerOpts
	// rawECDSA converts the ASN.1 ECDSA signature a crypto.Signer returns into r||s (RFC 9421 section 3.3.4).
	rawECDSA bool
}

var (
	algRSASHA256 = &algorithm{name: "rsa-sha256", kind: keyRSA, hash: crypto.SHA256, opts: crypto.SHA256}
	algRSASHA512 = &algorithm{name: "rsa-sha512", kind: keyRSA, hash: crypto.SHA512, opts: crypto.SHA512}

	algRSAv15SHA256 = &algorithm{name: "rsa-v1_5-sha256", kind: keyRSA, hash: crypto.SHA256, opts: crypto.SHA256}
	// RFC 9421 section 3.3.1: RSASSA-PSS, SHA-512, MGF1 with SHA-512, 64-byte salt.
	algRSAPSSSHA512 = &algorithm{name: "rsa-pss-sha512", kind: keyRSA, hash: crypto.SHA512,
		opts: &rsa.PSSOptions{SaltLength: 64, Hash: crypto.SHA512}}
	algECDSAP256SHA256 = &algorithm{name: "ecdsa-p256-sha256", kind: keyECDSAP256, hash: crypto.SHA256,
		opts: crypto.SHA256, rawECDSA: true}
	algEd25519 = &algorithm{name: "ed25519", kind: keyEd25519, opts: crypto.Hash(0)}
)

// cavageAlgorithms are the values of the draft-cavage-10 "algorithm" parameter we emit.
var cavageAlgorithms = map[string]*algorithm{
	algRSASHA256.name: algRSASHA256,
	algRSASHA512.name: algRSASHA512,
}

// rfc9421Algorithms are the RFC 9421 "alg" values we sign with.
var rfc9421Algorithms = map[string]*algorithm{
	algRSAv15SHA256.name:    algRSAv15SHA256,
	algRSAPSSSHA512.name:    algRSAPSSSHA512,
	algECDSAP256SHA256.name: algECDSAP256SHA256,
	algEd25519.name:         algEd25519,
}

// sign signs msg with key. It hashes msg itself, so it allocates nothing beyond what the key's Sign does.
func (a *algorithm) sign(key crypto.Signer, msg []byte) ([]byte, error) {
	var sig []byte
	var err error
	switch a.hash {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, d[:], a.opts)
	case crypto.SHA512:
		d := sha512.Sum512(msg)
		sig, err = key.Sign(rand.Reader, d[:], a.opts)
	default:
		sig, err = key.Sign(rand.Reader, msg, a.opts)
	}
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", a.name, err)
	}
	if a.rawECDSA {
		return ecdsaASN1ToRaw(sig, 32)
	}
	return sig, nil
}

// ecdsaASN1ToRaw turns an ASN.1 ECDSA-Sig-Value into the fixed-size r||s form.
func ecdsaASN1ToRaw(der []byte, size int) ([]byte, error) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil || len(rest) != 0 || v.R == nil || v.S == nil {
		return nil, errors.New("ecdsa signer returned a malformed ASN.1 signature")
	}
	if v.R.Sign() <= 0 || v.S.Sign() <= 0 || v.R.BitLen() > size*8 || v.S.BitLen() > size*8 {
		return nil, errors.New("ecdsa signer returned an out-of-range signature")
	}
	out := make([]byte, 2*size)
	v.R.FillBytes(out[:size])
	v.S.FillBytes(out[size:])
	return out, nil
}

// kindOf classifies a public key; 0 means a kind no algorithm here signs with.
func kindOf(pub crypto.PublicKey) keyKind {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return keyRSA
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return keyECDSAP256
		}
	case ed25519.PublicKey:
		return keyEd25519
	}
	return 0
}
