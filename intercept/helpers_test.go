package intercept

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// countObserver counts events by kind and host (refusals by reason).
type countObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countObserver) add(k string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[k]++
}

func (o *countObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[k]
}

func (o *countObserver) Intercepted(h string)                 { o.add("intercepted " + h) }
func (o *countObserver) Refused(h string, r Reason)           { o.add(fmt.Sprintf("refused %s %s", h, r)) }
func (o *countObserver) LeafIssued(h string, _ time.Duration) { o.add("issued " + h) }
func (o *countObserver) CacheHit(h string)                    { o.add("hit " + h) }

func allowOnly(hosts ...string) Allow {
	return func(h string) bool {
		for _, a := range hosts {
			if a == h {
				return true
			}
		}
		return false
	}
}

func mustGenerate(t testing.TB, cfg GenerateConfig) *GeneratedCA {
	t.Helper()
	g, err := Generate(cfg, nil)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return g
}

// verifyLeaf checks that c chains to root for host.
func verifyLeaf(t testing.TB, c *tls.Certificate, root *x509.Certificate, host string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("parsing chain: %v", err)
		}
		inter.AddCert(ic)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, Intermediates: inter}); err != nil {
		t.Fatalf("leaf for %s does not verify: %v", host, err)
	}
}

func testlogger(t testing.TB) *zap.Logger {
	l, _ := testlog.New(t)
	return l
}
