package vaultsrc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/hashicorp/vault/api"
)

// TransitCSR asks Transit for a PKCS #10 certificate signing request for
// version (0: the latest) of the key, signed by that key inside Vault, with
// the subject and names of tmpl. It is the first onboarding step with a bank
// or QTSP: send the CSR, then import the chain they return with
// TransitSetCertificateChain.
func (c *Client) TransitCSR(ctx context.Context, key TransitKeyConfig, version int, tmpl *x509.CertificateRequest) ([]byte, error) {
	key = key.withDefaults()
	// Vault takes the template as a CSR; any key signs it, Vault replaces key and signature.
	throwaway, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	t := *tmpl
	t.SignatureAlgorithm = x509.UnknownSignatureAlgorithm
	der, err := x509.CreateCertificateRequest(rand.Reader, &t, throwaway)
	if err != nil {
		return nil, fmt.Errorf("building the CSR template: %w", err)
	}
	body := map[string]any{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	if version > 0 {
		body["version"] = version
	}
	op := fmt.Sprintf("creating a CSR with vault transit key %s/keys/%s", key.Mount, key.Key)
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, key.Mount+"/keys/"+key.Key+"/csr", body)
	})
	if err != nil {
		return nil, err
	}
	csr, _ := s.Data["csr"].(string)
	if csr == "" {
		return nil, fmt.Errorf("%s: no csr in Vault's answer", op)
	}
	return []byte(csr), nil
}

// TransitSetCertificateChain imports the PEM certificate chain (leaf first)
// issued for version (0: the latest) of the key. Vault checks that the leaf's
// public key is the key's.
func (c *Client) TransitSetCertificateChain(ctx context.Context, key TransitKeyConfig, version int, chainPEM []byte) error {
	key = key.withDefaults()
	body := map[string]any{"certificate_chain": string(chainPEM)}
	if version > 0 {
		body["version"] = version
	}
	op := fmt.Sprintf("importing a certificate chain into vault transit key %s/keys/%s", key.Mount, key.Key)
	_, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, key.Mount+"/keys/"+key.Key+"/set-certificate", body)
	})
	return err
}
