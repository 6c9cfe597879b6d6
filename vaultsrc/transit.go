package vaultsrc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
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
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/internal/tracing"
	"github.com/tokenproxy/tokenproxy/problem"
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
		return problem.Field(at+".key", "missing; name the Transit key (transit/keys/<key>)")
	}
	return nil
}

// transitHealthName is the one health entry of a Transit key, reported to by
// its signers (each signature) and by its certificate source (each poll), so
// that either one succeeding after an outage clears the other's failure.
func transitHealthName(k TransitKeyConfig) string {
	return "vault transit " + k.Mount + "/keys/" + k.Key
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
	return nil, certs.Refuse(fmt.Errorf("vault transit key %s/%s: no version's public key matches the certificate's (%s)",
		cfg.Mount, cfg.Key, certs.KeyDescription(pub)))
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
	return s.SignTraced(context.Background(), digest, opts)
}

// SignTraced is Sign in the trace of ctx's span (signer.TracedSigner): it
// takes nothing else from ctx and is bounded by the signer's own timeout.
func (s *TransitSigner) SignTraced(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(tracing.Detach(ctx), s.timeout)
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
	ctx, sp := tracing.Start(ctx, tracing.SpanTransitSign, trace.SpanKindClient)
	if sp.IsRecording() {
		sp.SetAttributes(tracing.KeyTransitKey.String(s.cfg.Key))
	}
	defer sp.End()
	resp, err := s.c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, s.cfg.Mount+"/sign/"+s.cfg.Key, body)
	})
	// Health follows whether signing works at all; a refused input is the caller's problem.
	if err == nil || isUnavailable(err) || errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrNotFound) {
		s.c.health.report(transitHealthName(s.cfg), err)
	}
	if err != nil {
		tracing.Fail(sp, "vault")
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
