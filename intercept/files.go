package intercept

import (
	"context"
	"crypto"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/certs"
)

// FileConfig names the CA's PEM files. The key may be PKCS#8, PKCS#1 or
// SEC 1 (EC); the certificate file may carry the CA's parents after it.
//
//	interception:
//	  ca:
//	    files: {cert_file: /etc/tokenproxy/ca.crt, key_file: /etc/tokenproxy/ca.key}
type FileConfig struct {
	CertFile string        `yaml:"cert_file"`
	KeyFile  string        `yaml:"key_file"`
	Interval time.Duration `yaml:"poll_interval,omitempty"` // how often the files are checked (default 30s)
}

// FileCA is an interception CA read from PEM files and reloaded when they
// change. A file pair that does not parse, does not match, is expired or is
// not a CA is logged once and leaves the previous CA serving.
type FileCA struct {
	holder   *certs.Holder
	reloader *certs.Reloader
	cur      atomic.Pointer[localCA]
	gen      atomic.Uint64
	now      func() time.Time
}

// NewFileCA returns a FileCA for cfg. Call Load once at start-up (its error
// is fatal there), then Run in a goroutine.
func NewFileCA(cfg FileConfig, log *zap.Logger, now func() time.Time) *FileCA {
	if now == nil {
		now = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	c := &FileCA{holder: certs.NewHolder(nil), now: now}
	c.reloader = &certs.Reloader{
		Name:     "interception CA",
		Holder:   c.holder,
		Source:   &certs.FileSource{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile},
		Interval: cfg.Interval,
		Log:      log,
		Now:      now,
		Validate: func(t *tls.Certificate) error { return checkCA(t.Leaf) },
	}
	c.holder.Subscribe(func(t *tls.Certificate) {
		c.cur.Store(newLocalCA(t.Certificate, t.Leaf, t.PrivateKey.(crypto.Signer)))
		c.gen.Add(1)
	})
	return c
}

// Load reads the files once.
func (c *FileCA) Load(ctx context.Context) error {
	if err := c.reloader.Load(ctx); err != nil {
		return fmt.Errorf("loading the interception CA: %w", err)
	}
	return nil
}

// Poll checks the files once and reports whether a new CA was loaded.
func (c *FileCA) Poll(ctx context.Context) (bool, error) { return c.reloader.Poll(ctx) }

// Run polls the files until ctx is done.
func (c *FileCA) Run(ctx context.Context) { c.reloader.Run(ctx) }

// Holder is the CA certificate holder (for expiry metrics).
func (c *FileCA) Holder() *certs.Holder { return c.holder }

// sign implements CA.
func (c *FileCA) sign(_ context.Context, host string, key crypto.Signer, ttl time.Duration) ([][]byte, error) {
	l := c.cur.Load()
	if l == nil {
		return nil, fmt.Errorf("the interception CA is not loaded yet (%s)", c.reloader.Source)
	}
	return l.sign(host, key.Public(), c.now(), ttl)
}

// Generation implements CA.
func (c *FileCA) Generation() uint64 { return c.gen.Load() }

// String implements CA.
func (c *FileCA) String() string { return "interception CA from " + c.reloader.Source.String() }
