package intercept

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// Config is the interception block of the configuration, plain data.
//
//	interception:
//	  ca:
//	    generate: {write_cert_to: /var/run/tokenproxy/ca.crt}
//	  leaf_ttl: 24h
//	  cache_size: 1000
//	  issue_rate: 10
//	  issue_burst: 20
type Config struct {
	CA         CAConfig      `yaml:"ca"`
	LeafTTL    time.Duration `yaml:"leaf_ttl,omitempty"`
	CacheSize  int           `yaml:"cache_size,omitempty"`
	IssueRate  float64       `yaml:"issue_rate,omitempty"`
	IssueBurst int           `yaml:"issue_burst,omitempty"`
	// PollInterval is how often a vault_pki CA's issuer is checked (default 5m).
	PollInterval time.Duration `yaml:"poll_interval,omitempty"`
}

// CAConfig names where the interception CA comes from: exactly one field.
type CAConfig struct {
	Files    *FileConfig     `yaml:"files,omitempty"`
	VaultPKI *VaultPKIConfig `yaml:"vault_pki,omitempty"`
	Generate *GenerateConfig `yaml:"generate,omitempty"`
}

// Validate checks the block; at is its place in the configuration
// ("interception"). Every message names the field and the fix.
func (c Config) Validate(at string) error {
	var errs []error
	n := 0
	if f := c.CA.Files; f != nil {
		n++
		if f.CertFile == "" || f.KeyFile == "" {
			errs = append(errs, fmt.Errorf("%s.ca.files: set both cert_file and key_file (PEM)", at))
		}
	}
	if v := c.CA.VaultPKI; v != nil {
		n++
		if v.Role == "" {
			errs = append(errs, fmt.Errorf("%s.ca.vault_pki.role: missing; name the PKI role that signs interception certificates", at))
		}
	}
	if g := c.CA.Generate; g != nil {
		n++
		if g.WriteCertTo == "" {
			errs = append(errs, fmt.Errorf("%s.ca.generate.write_cert_to: missing; give a path the app's container mounts, e.g. /var/run/tokenproxy/ca.crt", at))
		}
	}
	if n != 1 {
		errs = append(errs, fmt.Errorf("%s.ca: set exactly one of files, vault_pki or generate (found %d)", at, n))
	}
	if c.LeafTTL < 0 || c.LeafTTL > 0 && c.LeafTTL < 10*time.Minute {
		errs = append(errs, fmt.Errorf("%s.leaf_ttl: %v is too short; use at least 10m (default 24h)", at, c.LeafTTL))
	}
	if c.CacheSize < 0 || c.IssueRate < 0 || c.IssueBurst < 0 || c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("%s: cache_size, issue_rate, issue_burst and poll_interval must not be negative", at))
	}
	return errors.Join(errs...)
}

// Deps are what Build needs besides the configuration.
type Deps struct {
	// Hosts are the hosts of the intercepting routes; a generated CA is
	// name-constrained to them.
	Hosts []string
	// Vault signs for a vault_pki CA (required then).
	Vault    Logical
	Log      *zap.Logger
	Observer Observer
	Now      func() time.Time
}

// Interceptor is a built interception CA with its leaf issuer.
type Interceptor struct {
	CA     CA
	Leaves *Leaves
	run    func(ctx context.Context)
}

// Run keeps the CA current (file polling, Vault issuer polling) until ctx
// is done. It returns at once for a generated CA.
func (i *Interceptor) Run(ctx context.Context) {
	if i.run != nil {
		i.run(ctx)
	}
}

// Build makes the CA named by cfg, loads it once (an error is fatal at
// start-up) and returns it with its leaf issuer. Call Validate first.
func Build(ctx context.Context, cfg Config, d Deps) (*Interceptor, error) {
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	i := &Interceptor{}
	switch {
	case cfg.CA.Files != nil:
		fc := NewFileCA(*cfg.CA.Files, d.Log, d.Now)
		if err := fc.Load(ctx); err != nil {
			return nil, fmt.Errorf("interception.ca.files: %w", err)
		}
		i.CA, i.run = fc, fc.Run
	case cfg.CA.VaultPKI != nil:
		if d.Vault == nil {
			return nil, errors.New("interception.ca.vault_pki: no Vault connection is configured; add a vault block")
		}
		vc := NewVaultCA(d.Vault, *cfg.CA.VaultPKI)
		if _, err := vc.Poll(ctx); err != nil {
			return nil, fmt.Errorf("interception.ca.vault_pki: %w", err)
		}
		every := cfg.PollInterval
		if every == 0 {
			every = 5 * time.Minute
		}
		i.CA = vc
		i.run = func(ctx context.Context) {
			vc.Run(ctx, every, func(err error) {
				d.Log.Warn("checking the interception CA in Vault failed; signing continues with the issuer Vault uses", zap.Error(err))
			})
		}
	case cfg.CA.Generate != nil:
		g := *cfg.CA.Generate
		g.Hosts = d.Hosts
		gc, err := Generate(g, d.Now)
		if err != nil {
			return nil, err
		}
		d.Log.Info("interception CA generated; its certificate is written for apps to trust",
			zap.String("path", g.WriteCertTo), zap.String("subject", gc.Certificate().Subject.String()),
			zap.Time("not_after", gc.Certificate().NotAfter))
		i.CA = gc
	default:
		return nil, errors.New("interception.ca: set one of files, vault_pki or generate")
	}
	i.Leaves = NewLeaves(i.CA, LeafConfig{
		TTL: cfg.LeafTTL, CacheSize: cfg.CacheSize, IssueRate: rate.Limit(cfg.IssueRate), IssueBurst: cfg.IssueBurst,
		Now: d.Now, Observer: d.Observer,
	})
	return i, nil
}
