package vaultsrc

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
)

// TransitCertConfig pairs a Transit key with its certificate. The pair serves
// as a TLS client certificate and as the HTTP signature key and certificate,
// with the private key never leaving Vault. The certificate (public) is read
// from a KV v2 field, or, when Certificate is not set, from the chain imported
// into Transit itself with set-certificate (see TransitCSR).
//
//	cert:
//	  vault_transit:
//	    key: {mount: transit, key: qseal}
//	    certificate: {path: tokenproxy/bank/qseal, field: certificate}   # omit to use the chain in Transit
//	    poll_interval: 30s
type TransitCertConfig struct {
	Key TransitKeyConfig `yaml:"key"`
	// Certificate is the KV v2 field with the PEM certificate (and chain).
	Certificate secret.VaultRef `yaml:"certificate"`
	// PollInterval is how often the certificate's version is checked (default 30s).
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
}

// inTransit reports whether the certificate chain is kept in Transit.
func (t TransitCertConfig) inTransit() bool { return t.Certificate == (secret.VaultRef{}) }

func (t TransitCertConfig) withDefaults() TransitCertConfig {
	t.Key = t.Key.withDefaults()
	if !t.inTransit() && t.Certificate.Mount == "" {
		t.Certificate.Mount = "secret"
	}
	if t.PollInterval == 0 {
		t.PollInterval = DefaultPollInterval
	}
	return t
}

// Validate checks the block; at names its place in the configuration.
func (t TransitCertConfig) Validate(at string) error {
	var errs []error
	if err := t.Key.Validate(at + ".key"); err != nil {
		errs = append(errs, err)
	}
	if !t.inTransit() {
		if t.Certificate.Path == "" {
			errs = append(errs, problem.Field(at+".certificate.path", "missing; name the KV v2 secret holding the certificate (or omit certificate to use the chain stored in Transit)"))
		}
		if t.Certificate.Field == "" {
			errs = append(errs, problem.Field(at+".certificate.field", "missing; name the field with the PEM certificate"))
		}
	}
	if t.PollInterval < 0 {
		errs = append(errs, problem.Field(at+".poll_interval", "must be positive, e.g. 30s"))
	}
	return errors.Join(errs...)
}

// TransitCertSource is a certs.Source whose certificates carry a
// *TransitSigner as PrivateKey. It polls the certificate's KV version; on a
// new version it reads the certificate and pins the signer to the key version
// matching the certificate's public key.
type TransitCertSource struct {
	c       *Client
	cfg     TransitCertConfig
	refused refusal
}

var _ certs.Source = (*TransitCertSource)(nil)

// TransitCertSource returns a source for cfg.
func (c *Client) TransitCertSource(cfg TransitCertConfig) *TransitCertSource {
	return &TransitCertSource{c: c, cfg: cfg.withDefaults()}
}

// PollInterval is the configured interval between version checks.
func (s *TransitCertSource) PollInterval() time.Duration { return s.cfg.PollInterval }

// String implements certs.Source.
func (s *TransitCertSource) String() string {
	if s.cfg.inTransit() {
		return fmt.Sprintf("vault transit %s/keys/%s with its stored certificate chain", s.cfg.Key.Mount, s.cfg.Key.Key)
	}
	return fmt.Sprintf("vault transit %s/keys/%s with certificate kv %s/%s#%s",
		s.cfg.Key.Mount, s.cfg.Key.Key, s.cfg.Certificate.Mount, s.cfg.Certificate.Path, s.cfg.Certificate.Field)
}

// Fetch implements certs.Source.
func (s *TransitCertSource) Fetch(ctx context.Context, version string) (*tls.Certificate, string, error) {
	c, v, err := s.fetch(ctx, version)
	// One health entry per key: the polls and the key's signatures report to it,
	// so a signature that failed during an outage is cleared by the next good poll.
	s.c.health.report(transitHealthName(s.cfg.Key), s.refused.healthErr(c, v, err))
	return c, v, err
}

func (s *TransitCertSource) fetch(ctx context.Context, version string) (*tls.Certificate, string, error) {
	if s.cfg.inTransit() {
		return s.fetchFromTransit(ctx, version)
	}
	kv := s.cfg.Certificate
	cur, err := s.c.kvCurrentVersion(ctx, kv.Mount, kv.Path)
	if err != nil {
		return nil, version, err
	}
	v := strconv.Itoa(cur)
	if v == version {
		return nil, version, nil
	}
	data, _, err := s.c.readKV(ctx, kv.Mount, kv.Path, cur)
	if err != nil {
		return nil, v, err
	}
	certPEM, err := stringField(data, kv.Field, kv.Mount, kv.Path, cur)
	if err != nil {
		return nil, v, certs.Refuse(err)
	}
	cert, err := s.c.TransitCertificate(ctx, s.cfg.Key, []byte(certPEM))
	if err != nil {
		return nil, v, fmt.Errorf("vault kv %s/%s (version %d): %w", kv.Mount, kv.Path, cur, err)
	}
	return cert, v, nil
}

// fetchFromTransit serves the newest key version that has a certificate
// chain imported; the version string names that key version and its chain.
func (s *TransitCertSource) fetchFromTransit(ctx context.Context, version string) (*tls.Certificate, string, error) {
	k, err := s.c.readTransitKey(ctx, s.cfg.Key)
	if err != nil {
		return nil, version, err
	}
	kv := 0
	for v := range k.chains {
		kv = max(kv, v)
	}
	if kv == 0 {
		return nil, version, fmt.Errorf("vault transit key %[1]s/keys/%[2]s: no version has a certificate chain; "+
			"make a CSR with `tokenproxy onboard csr --key %[1]s/%[2]s`, then import the issued chain with `tokenproxy onboard import --key %[1]s/%[2]s --chain FILE`",
			s.cfg.Key.Mount, s.cfg.Key.Key)
	}
	sum := sha256.Sum256([]byte(k.chains[kv]))
	v := fmt.Sprintf("v%d-%x", kv, sum[:6])
	if v == version {
		return nil, version, nil
	}
	chain, leaf, err := parseCertChain([]byte(k.chains[kv]))
	if err != nil {
		return nil, v, certs.Refuse(fmt.Errorf("vault transit key %s/keys/%s version %d: %w", s.cfg.Key.Mount, s.cfg.Key.Key, kv, err))
	}
	signer, err := s.c.newTransitSigner(s.cfg.Key, kv, k.versions[kv])
	if err != nil {
		return nil, v, err
	}
	return &tls.Certificate{Certificate: chain, Leaf: leaf, PrivateKey: signer}, v, nil
}

// TransitCertificate builds a *tls.Certificate from a PEM certificate (and
// chain) whose private key is the Transit key named by key. The result can be
// stored in a certs.Holder for mTLS and used for HTTP signatures.
//
// A certificate that does not parse or whose key is no version of the Transit
// key is a *certs.RefusedError; failing to read the key from Vault is not.
func (c *Client) TransitCertificate(ctx context.Context, key TransitKeyConfig, certPEM []byte) (*tls.Certificate, error) {
	chain, leaf, err := parseCertChain(certPEM)
	if err != nil {
		return nil, certs.Refuse(err)
	}
	signer, err := c.TransitSignerFor(ctx, key, leaf.PublicKey)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, Leaf: leaf, PrivateKey: signer}, nil
}
