package pki

import (
	"crypto"
	"crypto/x509"
	"fmt"
)

// CertifyKey issues a signing certificate for a public key whose private key
// is held elsewhere (a Vault Transit key, a CSR's key), with the given common
// name. Options as for IssueClient, except WithKeyType and WithIntermediate.
func (ca *CA) CertifyKey(commonName string, pub crypto.PublicKey, opts ...Option) (*x509.Certificate, error) {
	tmpl, err := baseTemplate(commonName, buildOptions(opts), DefaultLeafValidity)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	leaf, err := sign(tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certifying key for %q: %w", commonName, err)
	}
	return leaf, nil
}
