package vaultsrc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// latencies collects per-operation durations from parallel benchmark goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// report adds p50, p99 and signatures per second to the benchmark's output.
func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	pct := func(p float64) time.Duration { return l.d[min(len(l.d)-1, int(float64(len(l.d))*p))] }
	b.ReportMetric(float64(pct(0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "sign/s")
}

func benchSigner(b *testing.B, s crypto.Signer, opts crypto.SignerOpts, parallelism int) {
	digest := sha256.Sum256([]byte("benchmark"))
	var lat latencies
	b.SetParallelism(parallelism)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			if _, err := s.Sign(rand.Reader, digest[:], opts); err != nil {
				b.Error(err)
				return
			}
			lat.add(time.Since(t0))
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed)
}

// BenchmarkTransitSign measures signatures made by Vault Transit, one
// goroutine per GOMAXPROCS times the parallelism, against the dev server.
func BenchmarkTransitSign(b *testing.B) {
	srv := vaulttest.Start(b)
	mount := setupTransit(b, srv)
	c, err := New(b.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodToken,
		Token: &TokenAuth{File: writeFileB(b, srv.Token)}}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, k := range []struct {
		key  string
		opts crypto.SignerOpts
	}{
		{"rsa", crypto.SHA256},
		{"rsa", &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}},
		{"ec", crypto.SHA256},
	} {
		s, err := c.TransitSigner(b.Context(), TransitKeyConfig{Mount: mount, Key: k.key})
		if err != nil {
			b.Fatal(err)
		}
		for _, par := range []int{1, 8} {
			b.Run(benchName(k.key, k.opts, par), func(b *testing.B) { benchSigner(b, s, k.opts, par) })
		}
	}
}

// BenchmarkLocalSign is the same with keys in process memory, for comparison.
func BenchmarkLocalSign(b *testing.B) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, k := range []struct {
		key    string
		signer crypto.Signer
		opts   crypto.SignerOpts
	}{
		{"rsa", rk, crypto.SHA256},
		{"rsa", rk, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}},
		{"ec", ek, crypto.SHA256},
	} {
		for _, par := range []int{1, 8} {
			b.Run(benchName(k.key, k.opts, par), func(b *testing.B) { benchSigner(b, k.signer, k.opts, par) })
		}
	}
}

func benchName(key string, opts crypto.SignerOpts, par int) string {
	alg := "ecdsa-p256"
	if key == "rsa" {
		alg = "rsa2048-pkcs1v15"
		if isPSS(opts) {
			alg = "rsa2048-pss"
		}
	}
	return fmt.Sprintf("%s/par=%d", alg, par)
}

func isPSS(o crypto.SignerOpts) bool { _, ok := o.(*rsa.PSSOptions); return ok }

func writeFileB(b *testing.B, content string) string {
	p := b.TempDir() + "/token"
	if err := writeFileRaw(p, content); err != nil {
		b.Fatal(err)
	}
	return p
}
