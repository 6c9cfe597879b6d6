// Package certs loads client and signing certificates (PKCS#12 or PEM),
// checks them, and keeps the current one in a Holder that a Reloader swaps
// atomically when the material changes at its source.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Errors that name what is wrong with certificate material. They never carry
// the passcode or key bytes.
var (
	// ErrWrongPasscode means the PKCS#12 passcode does not open the file.
	ErrWrongPasscode = errors.New("the PKCS#12 passcode is wrong (the file could not be decrypted with it)")
	// ErrKeyMismatch means the private key does not belong to the certificate.
	ErrKeyMismatch = errors.New("the private key does not match the certificate's public key")
	// ErrNoCertificate means the input held no certificate.
	ErrNoCertificate = errors.New("no certificate found")
	// ErrNoKey means the input held no private key.
	ErrNoKey = errors.New("no private key found")
)

// ExpiredError reports a certificate past its NotAfter.
type ExpiredError struct {
	Subject  string
	NotAfter time.Time
}

func (e *ExpiredError) Error() string {
	return fmt.Sprintf("certificate %q expired on %s; install a renewed certificate", e.Subject, e.NotAfter.UTC().Format(time.RFC3339))
}

// NotYetValidError reports a certificate before its NotBefore.
type NotYetValidError struct {
	Subject   string
	NotBefore time.Time
}

func (e *NotYetValidError) Error() string {
	return fmt.Sprintf("certificate %q is not valid before %s; check the clock or the certificate", e.Subject, e.NotBefore.UTC().Format(time.RFC3339))
}

// ParsePKCS12 decodes a PKCS#12 (.pfx/.p12) file holding a private key, its
// certificate and optionally the CA chain. Legacy (RC2/3DES) and modern
// (AES/PBES2) encodings are accepted.
func ParsePKCS12(data []byte, passcode string) (*tls.Certificate, error) {
	key, leaf, chain, err := pkcs12.DecodeChain(data, passcode)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return nil, ErrWrongPasscode
		}
		return nil, fmt.Errorf("decoding PKCS#12: %w", err)
	}
	if leaf == nil {
		return nil, ErrNoCertificate
	}
	signer, ok := key.(crypto.Signer)
	if !ok || key == nil {
		return nil, ErrNoKey
	}
	if err := keyMatches(leaf, signer); err != nil {
		return nil, err
	}
	c := &tls.Certificate{PrivateKey: signer, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, ca := range chain {
		c.Certificate = append(c.Certificate, ca.Raw)
	}
	return c, nil
}

// ParsePEM decodes a PEM certificate (optionally followed by its chain) and a
// PEM private key (PKCS#1, PKCS#8 or SEC 1). certPEM and keyPEM may be the
// same bundle.
func ParsePEM(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if !bytes.Contains(certPEM, []byte("CERTIFICATE-----")) {
		return nil, ErrNoCertificate
	}
	if !bytes.Contains(keyPEM, []byte("PRIVATE KEY-----")) {
		return nil, ErrNoKey
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// Recompute to give our own error for a mismatch; crypto/tls words it differently per key type.
		if leaf, key, perr := parsePEMParts(certPEM, keyPEM); perr == nil && keyMatches(leaf, key) != nil {
			return nil, ErrKeyMismatch
		}
		return nil, fmt.Errorf("decoding PEM certificate and key: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
	}
	return &c, nil
}

func parsePEMParts(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	var leaf *x509.Certificate
	for rest := certPEM; leaf == nil; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, nil, ErrNoCertificate
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			leaf = c
		}
	}
	for rest := keyPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, nil, ErrNoKey
		}
		var k any
		var err error
		switch b.Type {
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, nil, ErrNoKey
		}
		return leaf, s, nil
	}
}

// keyMatches reports ErrKeyMismatch unless key is the private half of leaf's public key.
func keyMatches(leaf *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(leaf.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}

// Check verifies that c's key belongs to its certificate and that the
// certificate is within its validity window at now.
func Check(c *tls.Certificate, now time.Time) error {
	if c == nil || len(c.Certificate) == 0 {
		return ErrNoCertificate
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("parsing certificate: %w", err)
		}
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return ErrNoKey
	}
	if err := keyMatches(leaf, key); err != nil {
		return err
	}
	if now.After(leaf.NotAfter) {
		return &ExpiredError{Subject: leaf.Subject.String(), NotAfter: leaf.NotAfter}
	}
	if now.Before(leaf.NotBefore) {
		return &NotYetValidError{Subject: leaf.Subject.String(), NotBefore: leaf.NotBefore}
	}
	return nil
}

// KeyDescription names a key's algorithm and size the way logs and error
// messages show it, e.g. "RSA-2048", "ECDSA P-384" or "Ed25519"; a nil key is
// "missing". It is the one description used by certs, signer and vaultsrc.
func KeyDescription(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case nil:
		return "missing"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}
