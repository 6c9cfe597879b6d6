package consentstore

import (
	"context"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// BenchmarkVaultRefresh is the Vault store's share of one refresh: two
// check-and-set writes (intent, answer), plus the read before them.
func BenchmarkVaultRefresh(b *testing.B) {
	srv := vaulttest.Start(b)
	mount := vaulttest.Unique("consents")
	srv.Mount(mount, "kv-v2")
	s := NewVault(vaultClient(b, srv), mount, "tokenproxy")
	ctx := context.Background()
	c := sample("psu-1")
	gen, err := s.Put(ctx, c, 0)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for b.Loop() {
		if _, err := s.Get(ctx, c.Key()); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if gen, err = s.Put(ctx, c, gen); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "refreshes/s")
}
