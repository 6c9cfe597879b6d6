package testpki

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// IssueFor issues a client certificate with the given common name for pub, a
// public key whose private half the caller does not hold: a key kept in
// Vault Transit, or the key of a certificate signing request. Options as for
// IssueClient (WithKeyType does not apply). It returns the parsed certificate;
// the chain above it is ca and its parents.
func (ca *CA) IssueFor(commonName string, pub crypto.PublicKey, opts ...Option) (*x509.Certificate, error) {
	o := buildOptions(opts)
	issuer := ca
	if o.intermediate != nil {
		if !o.intermediate.descendsFrom(ca) {
			return nil, fmt.Errorf("testpki: intermediate %q was not made by CA %q",
				o.intermediate.cert.Subject.CommonName, ca.cert.Subject.CommonName)
		}
		issuer = o.intermediate
	}
	tmpl, err := baseTemplate(commonName, o, DefaultLeafValidity)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if o.extKeyUsage != nil {
		tmpl.ExtKeyUsage = o.extKeyUsage
	}
	cert, err := sign(tmpl, issuer.cert, pub, issuer.key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %q: %w", commonName, err)
	}
	return cert, nil
}
