package vaultsrc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/secret"
)

// TransitKeyConfig names a Transit signing key.
type TransitKeyConfig struct {
	// Mount is the Transit mount (default "transit").
	Mount string `yaml:"mount,omitempty"`
	// Key is the key's name (transit/keys/<key>).
	Key string `yaml:"key"`
}

func (t TransitKeyConfig) withDefaults() TransitKeyConfig {
	if t.Mount == "" {
		t.Mount = "transit"
	}
	return t
}

// Validate checks the block; at names its place in the configuration.
func (t TransitKeyConfig) Validate(at string) error {
	if t.Key == "" {
		return fmt.Errorf("%s.key: missing; name the Transit key (transit/keys/<key>)", at)
	}
	return nil
}

// TransitSigner is a crypto.Signer whose private key stays in Vault: Sign
// sends the digest to transit/sign/<key> (prehashed) and returns the
// signature. It is pinned to one key version, the one whose public key it
// reports, so signatures keep verifying against the certificate in use even
// after the key is rotated in Vault. Signatures run concurrently; nothing is
// serialised.
type TransitSigner struct {
	c       *Client
	cfg     TransitKeyConfig
	version int
	pub     crypto.PublicKey
	timeout time.Duration
}

var _ crypto.Signer = (*TransitSigner)(nil)

// TransitSigner returns a signer for the latest version of the key.
func (c *Client) TransitSigner(ctx context.Context, cfg TransitKeyConfig) (*TransitSigner, error) {
	cfg = cfg.withDefaults()
	k, err := c.readTransitKey(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return c.newTransitSigner(cfg, k.latest, k.versions[k.latest])
}

// TransitSignerFor returns a signer for the version of the key whose public
// key is pub (typically a certificate's), so that the key in Vault may be
// rotated ahead of the certificate.
func (c *Client) TransitSignerFor(ctx context.Context, cfg TransitKeyConfig, pub crypto.PublicKey) (*TransitSigner, error) {
	cfg = cfg.withDefaults()
	k, err := c.readTransitKey(ctx, cfg)
	if err != nil {
		return nil, err
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	for v := k.latest; v >= 1; v-- {
		if p, ok := k.versions[v].(equaler); ok && p.Equal(pub) {
			return c.newTransitSigner(cfg, v, k.versions[v])
		}
	}
	return nil, fmt.Errorf("vault transit key %s/%s: no version's public key matches the certificate's (%s)",
		cfg.Mount, cfg.Key, certs.KeyDescription(pub))
}

func (c *Client) newTransitSigner(cfg TransitKeyConfig, version int, pub crypto.PublicKey) (*TransitSigner, error) {
	if pub == nil {
		return nil, fmt.Errorf("vault transit key %s/%s: version %d has no public key", cfg.Mount, cfg.Key, version)
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("vault transit key %s/%s: %T keys are not supported for signing", cfg.Mount, cfg.Key, pub)
	}
	return &TransitSigner{c: c, cfg: cfg, version: version, pub: pub, timeout: c.cfg.Timeout}, nil
}

// Public implements crypto.Signer.
func (s *TransitSigner) Public() crypto.PublicKey { return s.pub }

// KeyVersion is the Transit key version this signer uses.
func (s *TransitSigner) KeyVersion() int { return s.version }

// String describes the key for logs.
func (s *TransitSigner) String() string {
	return fmt.Sprintf("vault transit %s/keys/%s (version %d, %s)", s.cfg.Mount, s.cfg.Key, s.version, certs.KeyDescription(s.pub))
}

// Sign implements crypto.Signer. digest is the hash of the message for RSA
// and ECDSA keys (opts.HashFunc() names the hash; *rsa.PSSOptions selects
// PSS, anything else PKCS #1 v1.5) and the message itself for Ed25519
// (opts.HashFunc() must be 0). rand is not used: Vault supplies randomness.
func (s *TransitSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

var transitHashes = map[crypto.Hash]string{
	crypto.SHA1:     "sha1",
	crypto.SHA224:   "sha2-224",
	crypto.SHA256:   "sha2-256",
	crypto.SHA384:   "sha2-384",
	crypto.SHA512:   "sha2-512",
	crypto.SHA3_224: "sha3-224",
	crypto.SHA3_256: "sha3-256",
	crypto.SHA3_384: "sha3-384",
	crypto.SHA3_512: "sha3-512",
}

// SignContext is Sign bounded by ctx.
func (s *TransitSigner) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		opts = crypto.Hash(0)
	}
	body := map[string]any{
		"input":       base64.StdEncoding.EncodeToString(digest),
		"key_version": s.version,
	}
	h := opts.HashFunc()
	switch s.pub.(type) {
	case ed25519.PublicKey:
		if h != 0 {
			return nil, fmt.Errorf("%s: Ed25519 signs the message itself; pass crypto.Hash(0), not %v", s, h)
		}
	default:
		name, ok := transitHashes[h]
		if !ok {
			return nil, fmt.Errorf("%s: hash %v is not supported by Transit", s, h)
		}
		if len(digest) != h.Size() {
			return nil, fmt.Errorf("%s: digest is %d bytes, %v needs %d", s, len(digest), h, h.Size())
		}
		body["prehashed"] = true
		body["hash_algorithm"] = name
		if _, isRSA := s.pub.(*rsa.PublicKey); isRSA {
			if pss, ok := opts.(*rsa.PSSOptions); ok {
				body["signature_algorithm"] = "pss"
				switch pss.SaltLength {
				case rsa.PSSSaltLengthAuto:
					body["salt_length"] = "auto"
				case rsa.PSSSaltLengthEqualsHash:
					body["salt_length"] = "hash"
				default:
					body["salt_length"] = strconv.Itoa(pss.SaltLength)
				}
			} else {
				body["signature_algorithm"] = "pkcs1v15"
			}
		}
	}
	op := "signing with " + s.String()
	resp, err := s.c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, s.cfg.Mount+"/sign/"+s.cfg.Key, body)
	})
	// Health follows whether signing works at all; a refused input is the caller's problem.
	if err == nil || isUnavailable(err) || errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrNotFound) {
		s.c.health.report("vault transit "+s.cfg.Mount+"/keys/"+s.cfg.Key, err)
	}
	if err != nil {
		return nil, err
	}
	if resp == nil || resp.Data == nil {
		return nil, fmt.Errorf("%s: empty answer from Vault", op)
	}
	sig, _ := resp.Data["signature"].(string)
	return decodeTransitSignature(sig)
}

// decodeTransitSignature turns "vault:v<N>:<base64>" into the raw signature.
func decodeTransitSignature(sig string) ([]byte, error) {
	parts := strings.SplitN(sig, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || len(parts[1]) < 2 || parts[1][0] != 'v' || parts[2] == "" {
		return nil, errors.New("transit signature is not in the vault:v<N>:<base64> form")
	}
	if _, err := strconv.Atoi(parts[1][1:]); err != nil {
		return nil, errors.New("transit signature is not in the vault:v<N>:<base64> form")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("transit signature: %w", err)
	}
	if len(b) == 0 {
		return nil, errors.New("transit signature is empty")
	}
	return b, nil
}

// transitKey is what the client learns from transit/keys/<key>.
type transitKey struct {
	keyType    string
	latest     int
	exportable bool
	versions   map[int]crypto.PublicKey
	chains     map[int]string // PEM chain imported with set-certificate, per version
}

func (c *Client) readTransitKey(ctx context.Context, cfg TransitKeyConfig) (*transitKey, error) {
	op := fmt.Sprintf("reading vault transit key %s/keys/%s", cfg.Mount, cfg.Key)
	s, err := c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().ReadWithContext(ctx, cfg.Mount+"/keys/"+cfg.Key)
	})
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, &ResponseError{Op: op, StatusCode: 404, Messages: []string{"no such key"}}
	}
	k := &transitKey{versions: map[int]crypto.PublicKey{}, chains: map[int]string{}}
	k.keyType, _ = s.Data["type"].(string)
	k.latest, _ = jsonInt(s.Data["latest_version"])
	k.exportable, _ = s.Data["exportable"].(bool)
	if ok, _ := s.Data["supports_signing"].(bool); !ok {
		return nil, fmt.Errorf("%s: a %s key cannot sign; create an rsa-*, ecdsa-* or ed25519 key", op, k.keyType)
	}
	keys, _ := s.Data["keys"].(map[string]any)
	for vs, raw := range keys {
		v, err := strconv.Atoi(vs)
		if err != nil {
			continue
		}
		m, _ := raw.(map[string]any)
		pubStr, _ := m["public_key"].(string)
		if pubStr == "" {
			continue
		}
		pub, err := parseTransitPublicKey(k.keyType, pubStr)
		if err != nil {
			return nil, fmt.Errorf("%s: version %d: %w", op, v, err)
		}
		k.versions[v] = pub
		if chain, _ := m["certificate_chain"].(string); chain != "" {
			k.chains[v] = chain
		}
	}
	if k.versions[k.latest] == nil {
		return nil, fmt.Errorf("%s: no public key for the latest version %d", op, k.latest)
	}
	return k, nil
}

func parseTransitPublicKey(keyType, s string) (crypto.PublicKey, error) {
	if keyType == "ed25519" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, errors.New("malformed Ed25519 public key")
		}
		return ed25519.PublicKey(b), nil
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("public key is not PEM")
	}
	if pub, err := x509.ParsePKIXPublicKey(b.Bytes); err == nil {
		return pub, nil
	}
	return x509.ParsePKCS1PublicKey(b.Bytes)
}

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
			errs = append(errs, fmt.Errorf("%s.certificate.path: missing; name the KV v2 secret holding the certificate (or omit certificate to use the chain stored in Transit)", at))
		}
		if t.Certificate.Field == "" {
			errs = append(errs, fmt.Errorf("%s.certificate.field: missing; name the field with the PEM certificate", at))
		}
	}
	if t.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("%s.poll_interval: must be positive, e.g. 30s", at))
	}
	return errors.Join(errs...)
}

// TransitCertSource is a certs.Source whose certificates carry a
// *TransitSigner as PrivateKey. It polls the certificate's KV version; on a
// new version it reads the certificate and pins the signer to the key version
// matching the certificate's public key.
type TransitCertSource struct {
	c   *Client
	cfg TransitCertConfig
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
	s.c.health.report(s.String(), err)
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
		return nil, v, err
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
		return nil, version, fmt.Errorf("vault transit key %s/keys/%s: no version has a certificate chain; import one with set-certificate",
			s.cfg.Key.Mount, s.cfg.Key.Key)
	}
	sum := sha256.Sum256([]byte(k.chains[kv]))
	v := fmt.Sprintf("v%d-%x", kv, sum[:6])
	if v == version {
		return nil, version, nil
	}
	chain, leaf, err := parseCertChain([]byte(k.chains[kv]))
	if err != nil {
		return nil, v, fmt.Errorf("vault transit key %s/keys/%s version %d: %w", s.cfg.Key.Mount, s.cfg.Key.Key, kv, err)
	}
	signer, err := s.c.newTransitSigner(s.cfg.Key, kv, k.versions[kv])
	if err != nil {
		return nil, v, err
	}
	return &tls.Certificate{Certificate: chain, Leaf: leaf, PrivateKey: signer}, v, nil
}

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

// TransitCertificate builds a *tls.Certificate from a PEM certificate (and
// chain) whose private key is the Transit key named by key. The result can be
// stored in a certs.Holder for mTLS and used for HTTP signatures.
func (c *Client) TransitCertificate(ctx context.Context, key TransitKeyConfig, certPEM []byte) (*tls.Certificate, error) {
	chain, leaf, err := parseCertChain(certPEM)
	if err != nil {
		return nil, err
	}
	signer, err := c.TransitSignerFor(ctx, key, leaf.PublicKey)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, Leaf: leaf, PrivateKey: signer}, nil
}
