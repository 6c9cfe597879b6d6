package vaultsrc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/problem"
)

// KVCertConfig names a client certificate kept in a KV v2 secret, either as
// a base64 PKCS#12 file with its passcode, or as PEM certificate and key.
//
//	cert:
//	  vault_kv:
//	    path: tokenproxy/bankingcircle/client
//	    pkcs12_field: pfx         # base64 of the .pfx
//	    passcode_field: passcode
//	    poll_interval: 30s
type KVCertConfig struct {
	// Mount is the KV v2 mount (default "secret").
	Mount string `yaml:"mount,omitempty"`
	// Path is the secret's path under the mount.
	Path string `yaml:"path"`
	// PKCS12Field holds the base64 of a .pfx/.p12; PasscodeField its passcode.
	PKCS12Field   string `yaml:"pkcs12_field,omitempty"`
	PasscodeField string `yaml:"passcode_field,omitempty"`
	// CertField holds the PEM certificate (and chain); KeyField the PEM key.
	CertField string `yaml:"cert_field,omitempty"`
	KeyField  string `yaml:"key_field,omitempty"`
	// PollInterval is how often the secret's metadata version is checked
	// (default 30s). Only a new version is read and parsed.
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
}

// DefaultPollInterval is how often KV secrets are checked for a new version.
const DefaultPollInterval = 30 * time.Second

func (k KVCertConfig) withDefaults() KVCertConfig {
	if k.Mount == "" {
		k.Mount = "secret"
	}
	if k.PollInterval == 0 {
		k.PollInterval = DefaultPollInterval
	}
	return k
}

// Validate checks the block; at names its place in the configuration.
func (k KVCertConfig) Validate(at string) error {
	var errs []error
	if k.Path == "" {
		errs = append(errs, problem.Field(at+".path", "missing; name the KV v2 secret, e.g. tokenproxy/bank/client"))
	}
	p12 := k.PKCS12Field != "" || k.PasscodeField != ""
	pemSet := k.CertField != "" || k.KeyField != ""
	switch {
	case p12 && pemSet:
		errs = append(errs, problem.Field(at, "set either pkcs12_field and passcode_field, or cert_field and key_field, not both"))
	case p12 && (k.PKCS12Field == "" || k.PasscodeField == ""):
		errs = append(errs, problem.Field(at, "pkcs12_field and passcode_field go together; set both"))
	case pemSet && (k.CertField == "" || k.KeyField == ""):
		errs = append(errs, problem.Field(at, "cert_field and key_field go together; set both"))
	case !p12 && !pemSet:
		errs = append(errs, problem.Field(at, "name the fields: pkcs12_field and passcode_field, or cert_field and key_field"))
	}
	if k.PollInterval < 0 {
		errs = append(errs, problem.Field(at+".poll_interval", "must be positive, e.g. 30s"))
	}
	return errors.Join(errs...)
}

// KVCertSource is a certs.Source for a certificate in KV v2. Each Fetch reads
// only the secret's metadata; the data (the PFX and its passcode, or the PEM
// pair) is read and parsed only when the current version differs from the one
// given, which a certs.Reloader sets to the version it refused, if any: a bad
// version is read once. The version string is the KV version.
type KVCertSource struct {
	c       *Client
	cfg     KVCertConfig
	refused refusal
}

var _ certs.Source = (*KVCertSource)(nil)

// KVCertSource returns a source for cfg; drive it with a certs.Reloader
// whose Interval is cfg.PollInterval (see PollInterval).
func (c *Client) KVCertSource(cfg KVCertConfig) *KVCertSource {
	return &KVCertSource{c: c, cfg: cfg.withDefaults()}
}

// PollInterval is the configured interval between version checks.
func (s *KVCertSource) PollInterval() time.Duration { return s.cfg.PollInterval }

// String implements certs.Source.
func (s *KVCertSource) String() string {
	kind := "pem"
	if s.cfg.PKCS12Field != "" {
		kind = "pkcs12"
	}
	return fmt.Sprintf("vault kv %s/%s (%s)", s.cfg.Mount, s.cfg.Path, kind)
}

// Fetch implements certs.Source.
func (s *KVCertSource) Fetch(ctx context.Context, version string) (*tls.Certificate, string, error) {
	c, v, err := s.fetch(ctx, version)
	s.c.health.report(s.String(), s.refused.healthErr(c, v, err))
	return c, v, err
}

func (s *KVCertSource) fetch(ctx context.Context, version string) (*tls.Certificate, string, error) {
	cur, err := s.c.kvCurrentVersion(ctx, s.cfg.Mount, s.cfg.Path)
	if err != nil {
		return nil, version, err
	}
	v := strconv.Itoa(cur)
	if v == version {
		return nil, version, nil
	}
	data, _, err := s.c.readKV(ctx, s.cfg.Mount, s.cfg.Path, cur)
	if err != nil {
		return nil, v, err
	}
	cert, err := s.parse(data, cur)
	if err != nil {
		return nil, v, certs.Refuse(err)
	}
	return cert, v, nil
}

func (s *KVCertSource) parse(data map[string]any, version int) (*tls.Certificate, error) {
	field := func(name string) (string, error) {
		return stringField(data, name, s.cfg.Mount, s.cfg.Path, version)
	}
	wrap := func(err error) error {
		return fmt.Errorf("vault kv %s/%s (version %d): %w", s.cfg.Mount, s.cfg.Path, version, err)
	}
	if s.cfg.PKCS12Field != "" {
		b64, err := field(s.cfg.PKCS12Field)
		if err != nil {
			return nil, err
		}
		der, err := decodeBase64(b64)
		if err != nil {
			return nil, wrap(fmt.Errorf("field %q is not base64: %w", s.cfg.PKCS12Field, err))
		}
		pass, err := field(s.cfg.PasscodeField)
		if err != nil {
			return nil, err
		}
		c, err := certs.ParsePKCS12(der, pass)
		if err != nil {
			return nil, wrap(err)
		}
		return c, nil
	}
	certPEM, err := field(s.cfg.CertField)
	if err != nil {
		return nil, err
	}
	keyPEM, err := field(s.cfg.KeyField)
	if err != nil {
		return nil, err
	}
	c, err := certs.ParsePEM([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, wrap(err)
	}
	return c, nil
}

// decodeBase64 accepts padded or unpadded standard base64 with line breaks,
// as produced by "base64 client.pfx".
func decodeBase64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseCertChain decodes PEM certificates (leaf first) for a certificate whose
// key lives elsewhere (Transit).
func parseCertChain(certPEM []byte) ([][]byte, *x509.Certificate, error) {
	var chain [][]byte
	var leaf *x509.Certificate
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if leaf == nil {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parsing certificate: %w", err)
			}
			leaf = c
		}
		chain = append(chain, b.Bytes)
	}
	if leaf == nil {
		return nil, nil, certs.ErrNoCertificate
	}
	return chain, leaf, nil
}
