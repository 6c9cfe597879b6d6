package intercept

import (
	"fmt"
	"testing"

	"golang.org/x/time/rate"
)

// BenchmarkLeafIssue is the leaf cost alone: key generation and signing.
// The connection and request costs through the real proxy are in
// proxy/connect_bench_test.go.
func BenchmarkLeafIssue(b *testing.B) {
	ca := mustGenerate(b, GenerateConfig{})
	leaves := NewLeaves(ca, LeafConfig{CacheSize: 1, IssueRate: rate.Inf})
	allow := func(string) bool { return true }
	b.Run("cached", func(b *testing.B) {
		for range b.N {
			if _, err := leaves.Certificate(b.Context(), "bank.example", allow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("issued", func(b *testing.B) {
		for i := range b.N {
			if _, err := leaves.Certificate(b.Context(), fmt.Sprintf("h%d.example", i), allow); err != nil {
				b.Fatal(err)
			}
		}
	})
}
