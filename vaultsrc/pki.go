package vaultsrc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/problem"
)

// PKIConfig asks Vault's PKI engine for a short-lived client certificate.
//
//	cert:
//	  vault_pki:
//	    mount: pki
//	    role: tokenproxy-client
//	    common_name: payments.tokenproxy.internal
//	    ttl: 24h
type PKIConfig struct {
	// Mount is the PKI mount (default "pki").
	Mount string `yaml:"mount,omitempty"`
	// Role is the PKI role to issue from (pki/issue/<role>).
	Role string `yaml:"role"`
	// CommonName is the certificate's CN.
	CommonName string `yaml:"common_name"`
	// AltNames are DNS / email SANs; IPSANs are IP SANs.
	AltNames []string `yaml:"alt_names,omitempty"`
	IPSANs   []string `yaml:"ip_sans,omitempty"`
	// TTL is the requested lifetime (default: the role's).
	TTL time.Duration `yaml:"ttl,omitempty"`
	// RetryInterval paces attempts after a failed issue (default 10s).
	RetryInterval time.Duration `yaml:"retry_interval,omitempty"`
}

func (p PKIConfig) withDefaults() PKIConfig {
	if p.Mount == "" {
		p.Mount = "pki"
	}
	if p.RetryInterval == 0 {
		p.RetryInterval = 10 * time.Second
	}
	return p
}

// Validate checks the block; at names its place in the configuration.
func (p PKIConfig) Validate(at string) error {
	var errs []error
	if p.Role == "" {
		errs = append(errs, problem.Field(at+".role", "missing; name the PKI role to issue from"))
	}
	if p.CommonName == "" {
		errs = append(errs, problem.Field(at+".common_name", "missing; give the certificate's common name"))
	}
	if p.TTL < 0 {
		errs = append(errs, problem.Field(at+".ttl", "must be positive, e.g. 24h"))
	}
	if p.RetryInterval < 0 {
		errs = append(errs, problem.Field(at+".retry_interval", "must be positive, e.g. 10s"))
	}
	return errors.Join(errs...)
}

// renewAt is when a certificate valid from notBefore to notAfter is renewed:
// at two thirds of its lifetime, moved by up to ±1/12 of the lifetime
// according to jitter in [0, 1) so that replicas do not renew in step. It is
// always before notAfter.
func renewAt(notBefore, notAfter time.Time, jitter float64) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	jitter = min(max(jitter, 0), 1)
	// 2/3 + (jitter-0.5)/6 of the lifetime, computed as one division to stay exact.
	return notBefore.Add(time.Duration(math.Round(float64(life) * (3.5 + jitter) / 6)))
}

// PKIIssuer keeps a certs.Holder supplied with certificates issued by Vault's
// PKI engine. Run owns the schedule: it renews at about two thirds of the
// certificate's lifetime, and after a failure retries at the pace of a
// rate limiter while the old certificate keeps serving.
type PKIIssuer struct {
	c      *Client
	cfg    PKIConfig
	holder *certs.Holder
	log    *zap.Logger
	// renewAt is the schedule; tests replace it to compress time.
	renewAt func(notBefore, notAfter time.Time) time.Time

	limiter *rate.Limiter
	force   chan struct{}

	mu   sync.Mutex
	next time.Time // when the held certificate is due for renewal
}

// PKIIssuer returns an issuer for cfg that stores into holder. Call Issue
// once at start-up (its error is fatal there), then run Run in a goroutine.
func (c *Client) PKIIssuer(cfg PKIConfig, holder *certs.Holder) *PKIIssuer {
	cfg = cfg.withDefaults()
	return &PKIIssuer{
		c:       c,
		cfg:     cfg,
		holder:  holder,
		log:     c.log.With(zap.String("pki", cfg.Mount+"/issue/"+cfg.Role)),
		renewAt: func(nb, na time.Time) time.Time { return renewAt(nb, na, rand.Float64()) }, //nolint:gosec // jitter, not a secret
		limiter: rate.NewLimiter(rate.Every(cfg.RetryInterval), 1),
		force:   make(chan struct{}, 1),
	}
}

// String describes the issuer for logs.
func (p *PKIIssuer) String() string { return "vault pki " + p.cfg.Mount + "/issue/" + p.cfg.Role }

// NextRenewal is when the held certificate is due for renewal (zero before the first issue).
func (p *PKIIssuer) NextRenewal() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// ForceRenew asks Run to issue a new certificate now, e.g. after the
// upstream rejected the one held.
func (p *PKIIssuer) ForceRenew() {
	select {
	case p.force <- struct{}{}:
	default:
	}
}

// Issue asks Vault for a certificate and stores it in the holder once it
// parsed and passed certs.Check.
func (p *PKIIssuer) Issue(ctx context.Context) (*tls.Certificate, error) {
	cert, err := p.issue(ctx)
	p.c.health.report(p.String(), err)
	if err != nil {
		return nil, err
	}
	p.holder.Store(cert)
	next := p.renewAt(cert.Leaf.NotBefore, cert.Leaf.NotAfter)
	p.mu.Lock()
	p.next = next
	p.mu.Unlock()
	p.log.Info("client certificate issued",
		zap.String("subject", cert.Leaf.Subject.String()),
		zap.String("serial", cert.Leaf.SerialNumber.Text(16)),
		zap.Time("not_after", cert.Leaf.NotAfter),
		zap.Time("renew_at", next))
	return cert, nil
}

func (p *PKIIssuer) issue(ctx context.Context) (*tls.Certificate, error) {
	body := map[string]any{"common_name": p.cfg.CommonName, "format": "pem"}
	if len(p.cfg.AltNames) > 0 {
		body["alt_names"] = strings.Join(p.cfg.AltNames, ",")
	}
	if len(p.cfg.IPSANs) > 0 {
		body["ip_sans"] = strings.Join(p.cfg.IPSANs, ",")
	}
	if p.cfg.TTL > 0 {
		body["ttl"] = p.cfg.TTL.String()
	}
	op := "issuing a certificate from " + p.String()
	s, err := p.c.do(ctx, op, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, p.cfg.Mount+"/issue/"+p.cfg.Role, body)
	})
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("%s: empty answer from Vault", op)
	}
	certPEM, _ := s.Data["certificate"].(string)
	keyPEM, _ := s.Data["private_key"].(string)
	if certPEM == "" || keyPEM == "" {
		return nil, fmt.Errorf("%s: Vault's answer lacks the certificate or the private key", op)
	}
	chain := []byte(certPEM + "\n")
	if cas, ok := s.Data["ca_chain"].([]any); ok {
		for _, ca := range cas {
			if pemStr, ok := ca.(string); ok && !selfSigned(pemStr) {
				chain = append(chain, pemStr+"\n"...)
			}
		}
	}
	cert, err := certs.ParsePEM(chain, []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if err := certs.Check(cert, p.c.opts.now()); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return cert, nil
}

// selfSigned reports whether the PEM certificate is a root (not sent in the chain).
func selfSigned(pemStr string) bool {
	b, _ := pem.Decode([]byte(pemStr))
	if b == nil {
		return true
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return true
	}
	return bytes.Equal(c.RawIssuer, c.RawSubject)
}

// Run renews the certificate until ctx is done. When the holder is empty it
// issues at once. A failed renewal leaves the held certificate in place and
// is retried at the limiter's pace (RetryInterval).
func (p *PKIIssuer) Run(ctx context.Context) {
	for {
		at := p.NextRenewal()
		if p.holder.Load() == nil {
			at = time.Time{}
		}
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-p.force:
				t.Stop()
			case <-t.C:
			}
		}
		for {
			if err := p.limiter.Wait(ctx); err != nil {
				return
			}
			_, err := p.Issue(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			held := p.holder.Load()
			fields := []zap.Field{zap.Error(err), zap.Duration("retry_in", p.cfg.RetryInterval)}
			if held != nil && held.Leaf != nil {
				fields = append(fields, zap.Time("held_not_after", held.Leaf.NotAfter))
			}
			p.log.Warn("client certificate renewal failed; the held certificate keeps serving", fields...)
		}
	}
}
