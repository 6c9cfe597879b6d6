package intercept

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultPKIConfig names the Vault PKI mount and role that sign interception
// leaves. The role belongs to an intermediate CA whose key never leaves
// Vault; it must allow the intercepted hosts (allowed_domains, or
// allow_any_name) and EC keys.
//
//	interception:
//	  ca:
//	    vault_pki: {mount: pki_int, role: tokenproxy-intercept}
type VaultPKIConfig struct {
	Mount string `yaml:"mount,omitempty"` // default "pki"
	Role  string `yaml:"role"`
}

// Logical is the one Vault capability VaultCA needs: authenticated reads
// and writes of logical paths. APILogical adapts a *api.Client.
type Logical interface {
	Read(ctx context.Context, path string) (map[string]any, error)
	Write(ctx context.Context, path string, data map[string]any) (map[string]any, error)
}

// APILogical adapts a logged-in Vault API client to Logical.
func APILogical(c *api.Client) Logical { return apiLogical{c} }

type apiLogical struct{ c *api.Client }

func (a apiLogical) Read(ctx context.Context, path string) (map[string]any, error) {
	s, err := a.c.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("reading %s: nothing there", path)
	}
	return s.Data, nil
}

func (a apiLogical) Write(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	s, err := a.c.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("writing %s: empty answer", path)
	}
	return s.Data, nil
}

// VaultCA has Vault's PKI engine sign each leaf from a CSR made with the
// leaf's key here: neither the CA key nor the leaf key crosses the network.
// Its generation changes when Vault answers with another issuing CA, seen
// on a signature or by Poll.
type VaultCA struct {
	v   Logical
	cfg VaultPKIConfig

	mu     sync.Mutex
	issuer []byte // DER of the issuing CA last seen
	gen    atomic.Uint64
}

// NewVaultCA returns a VaultCA. Call Poll once at start-up to learn the
// issuing CA (its error is fatal there), then run Run in a goroutine.
func NewVaultCA(v Logical, cfg VaultPKIConfig) *VaultCA {
	if cfg.Mount == "" {
		cfg.Mount = "pki"
	}
	return &VaultCA{v: v, cfg: cfg}
}

// sign implements CA.
func (c *VaultCA) sign(ctx context.Context, host string, key crypto.Signer, ttl time.Duration) ([][]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}
	body := map[string]any{"common_name": host, "format": "pem", "ttl": ttl.String(), "exclude_cn_from_sans": false}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
		body["ip_sans"] = host
	} else {
		tmpl.DNSNames = []string{host}
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("making the CSR for %q: %w", host, err)
	}
	body["csr"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	data, err := c.v.Write(ctx, c.cfg.Mount+"/sign/"+c.cfg.Role, body)
	if err != nil {
		return nil, fmt.Errorf("%s: signing %q: %w", c, host, err)
	}
	leafPEM, _ := data["certificate"].(string)
	leaf, err := parseOnePEM(leafPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: the signed certificate for %q: %w", c, host, err)
	}
	if err := checkLeaf(leaf, host, key.Public()); err != nil {
		return nil, fmt.Errorf("%s: %w", c, err)
	}
	chain := [][]byte{leaf.Raw}
	if cas, ok := data["ca_chain"].([]any); ok {
		for _, s := range cas {
			ca, err := parseOnePEM(fmt.Sprint(s))
			if err == nil && !bytes.Equal(ca.RawIssuer, ca.RawSubject) {
				chain = append(chain, ca.Raw)
			}
		}
	}
	if s, _ := data["issuing_ca"].(string); s != "" {
		if ca, err := parseOnePEM(s); err == nil {
			c.noteIssuer(ca.Raw)
		}
	}
	return chain, nil
}

// checkLeaf verifies that Vault signed our key for host and nothing else.
func checkLeaf(leaf *x509.Certificate, host string, pub crypto.PublicKey) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := pub.(equaler); !ok || !k.Equal(leaf.PublicKey) {
		return errors.New("the signed certificate does not carry the requested key")
	}
	ip := net.ParseIP(host)
	ok := len(leaf.URIs) == 0 && len(leaf.EmailAddresses) == 0
	if ip != nil {
		ok = ok && len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 1 && leaf.IPAddresses[0].Equal(ip)
	} else {
		ok = ok && len(leaf.IPAddresses) == 0 && len(leaf.DNSNames) == 1 && leaf.DNSNames[0] == host
	}
	if !ok {
		return fmt.Errorf("the signed certificate names more or other hosts than %q (DNS %v, IP %v); set the role's allowed names and SANs accordingly", host, leaf.DNSNames, leaf.IPAddresses)
	}
	return nil
}

func parseOnePEM(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate in Vault's answer")
	}
	return x509.ParseCertificate(b.Bytes)
}

// noteIssuer bumps the generation when the issuing CA changed.
func (c *VaultCA) noteIssuer(der []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Equal(c.issuer, der) {
		return false
	}
	c.issuer = bytes.Clone(der)
	c.gen.Add(1)
	return true
}

// Poll reads the mount's default issuer and reports whether it changed.
func (c *VaultCA) Poll(ctx context.Context) (bool, error) {
	data, err := c.v.Read(ctx, c.cfg.Mount+"/cert/ca")
	if err != nil {
		return false, fmt.Errorf("%s: reading the issuing CA: %w", c, err)
	}
	s, _ := data["certificate"].(string)
	ca, err := parseOnePEM(s)
	if err != nil {
		return false, fmt.Errorf("%s: reading the issuing CA: %w", c, err)
	}
	return c.noteIssuer(ca.Raw), nil
}

// Run polls the issuer every interval until ctx is done; errors are
// reported to onErr (which may be nil).
func (c *VaultCA) Run(ctx context.Context, interval time.Duration, onErr func(error)) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.Poll(ctx); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// Generation implements CA.
func (c *VaultCA) Generation() uint64 { return c.gen.Load() }

// String implements CA.
func (c *VaultCA) String() string { return "vault pki " + c.cfg.Mount + "/sign/" + c.cfg.Role }
