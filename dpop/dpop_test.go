package dpop_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/dpop"
	"github.com/tokenproxy/tokenproxy/testkit/dpoptest"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

func ecKey(t testing.TB) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Proofs verify with go-jose: signature by the header's jwk, typ, htm, htu
// without query or fragment, iat, jti, ath of the token, the nonce; the
// thumbprint is the jkt the binding names.
func TestProofVerifies(t *testing.T) {
	for _, tc := range []struct {
		name, alg, want string
		key             crypto.Signer
	}{
		{"ES256 default", "", "ES256", ecKey(t)},
		{"PS256 default", "", "PS256", rsaKey(t)},
		{"ES256 named", "ES256", "ES256", ecKey(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := dpop.New(tc.key, tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			v := &dpoptest.Verifier{}
			proof, err := p.Proof("POST", "https://bank.example:8443/v1/pay%20ments?x=1#frag", "tok-123", "n-1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(proof, "POST", "https://bank.example:8443/v1/pay%20ments", "tok-123", "n-1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Alg != tc.want || "jkt:"+got.JKT != p.Binding() {
				t.Fatalf("alg %s jkt %s, want %s %s", got.Alg, got.JKT, tc.want, p.Binding())
			}
			if _, err := v.Verify(proof, "POST", "https://bank.example:8443/v1/pay%20ments", "tok-123", "n-1"); err == nil {
				t.Fatal("a replayed jti was accepted by the verifier")
			}
			// A token request: no ath, no nonce.
			proof, _ = p.Proof("POST", "https://as.example/token", "", "")
			if _, err := v.Verify(proof, "POST", "https://as.example/token", "", ""); err != nil {
				t.Fatal(err)
			}
			if got := dpop.NonceOf(proof); got != "" {
				t.Fatalf("nonce %q", got)
			}
		})
	}
}

// iat is the Proofer's clock; a proof from a clock far off is refused.
func TestProofIAT(t *testing.T) {
	p, _ := dpop.New(ecKey(t), "")
	p.Now = func() time.Time { return time.Now().Add(-5 * time.Minute) }
	proof, _ := p.Proof("GET", "https://rs.example/a", "t", "")
	if _, err := (&dpoptest.Verifier{}).Verify(proof, "GET", "https://rs.example/a", "t", ""); err == nil || !strings.Contains(err.Error(), "iat") {
		t.Fatalf("err %v", err)
	}
}

// RS256, a P-384 key, a short RSA key and a mismatched algorithm are refused.
func TestNewRefuses(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  string
		want string
	}{
		{"RS256", rsaKey(t), "RS256", "not allowed"},
		{"P-384", p384, "", "P-256"},
		{"ES256 on RSA", rsaKey(t), "ES256", "ES256 needs an ECDSA P-256 key"},
		{"PS256 on EC", ecKey(t), "PS256", "PS256 needs an RSA key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dpop.New(tc.key, tc.alg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// jti is unique across many concurrent proofs.
func TestJTIUnique(t *testing.T) {
	p, _ := dpop.New(ecKey(t), "")
	v := &dpoptest.Verifier{}
	var wg sync.WaitGroup
	errs := make(chan error, 500)
	for range 500 {
		wg.Go(func() {
			proof, err := p.Proof("GET", "https://rs.example/a", "t", "")
			if err == nil {
				_, err = v.Verify(proof, "GET", "https://rs.example/a", "t", "")
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v.Seen() != 500 {
		t.Fatalf("%d jtis", v.Seen())
	}
}

// A Client keeps one nonce per origin, replaced by each DPoP-Nonce; an
// answer without one keeps it; a malformed one is ignored.
func TestClientNonces(t *testing.T) {
	p, _ := dpop.New(ecKey(t), "")
	c := dpop.NewClient(p)
	if n := c.Observe("https://a.example/x?q", http.Header{"Dpop-Nonce": {"n1"}}); n != "n1" {
		t.Fatalf("nonce %q", n)
	}
	c.Observe("https://b.example/x", http.Header{"Dpop-Nonce": {"m1"}})
	c.Observe("https://a.example/y", http.Header{})
	c.Observe("https://a.example/y", http.Header{"Dpop-Nonce": {"bad nonce"}})
	if c.Nonce("https://a.example/z") != "n1" || c.Nonce("https://b.example/") != "m1" || c.Nonce("https://c.example/") != "" {
		t.Fatalf("nonces a=%q b=%q", c.Nonce("https://a.example/z"), c.Nonce("https://b.example/"))
	}
	proof, nonce, err := c.ProofFor("GET", "https://a.example/z", "tok")
	if err != nil || nonce != "n1" || dpop.NonceOf(proof) != "n1" {
		t.Fatalf("proof nonce %q %q %v", nonce, dpop.NonceOf(proof), err)
	}
	if !dpop.WantsNonce(http.Header{"Www-Authenticate": {`DPoP error="use_dpop_nonce", error_description="x"`}}) ||
		dpop.WantsNonce(http.Header{"Www-Authenticate": {`DPoP error="invalid_token"`}}) ||
		dpop.WantsNonce(http.Header{"Www-Authenticate": {`Bearer error="use_dpop_nonce"`}}) {
		t.Fatal("WantsNonce")
	}
}

func benchProof(b *testing.B, key crypto.Signer) {
	p, err := dpop.New(key, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Proof("GET", "https://api.bank.example/v1/accounts/123/transactions", "an-access-token-of-some-length", "nonce-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkProofES256 is one resource-request proof with a local P-256 key.
func BenchmarkProofES256(b *testing.B) { benchProof(b, ecKey(b)) }

// BenchmarkProofPS256 is one resource-request proof with a local RSA-2048 key.
func BenchmarkProofPS256(b *testing.B) { benchProof(b, rsaKey(b)) }

// BenchmarkProofTransitES256 is one proof signed by a Vault Transit
// ecdsa-p256 key (a Vault dev server on the same cores).
func BenchmarkProofTransitES256(b *testing.B) { benchTransit(b, "ecdsa-p256") }

// BenchmarkProofTransitPS256 is one proof signed by a Vault Transit
// rsa-2048 key (PSS, salt as long as the hash).
func BenchmarkProofTransitPS256(b *testing.B) { benchTransit(b, "rsa-2048") }

// benchTransit benchmarks proofs signed by a new Transit key of keyType.
func benchTransit(b *testing.B, keyType string) {
	if os.Getenv("VAULT_ADDR") == "" {
		b.Skip("needs VAULT_ADDR/VAULT_TOKEN (bash .ci/vault.sh start)")
	}
	srv := vaulttest.Start(b)
	mount := vaulttest.Unique("transit")
	srv.Mount(mount, "transit")
	srv.Write(mount+"/keys/dpop", map[string]any{"type": keyType})
	b.Setenv("DPOP_BENCH_VAULT_TOKEN", srv.Token)
	vc, err := vaultsrc.New(context.Background(), vaultsrc.Config{Address: srv.Addr,
		Auth: vaultsrc.AuthConfig{Method: "token", Token: &vaultsrc.TokenAuth{Env: "DPOP_BENCH_VAULT_TOKEN"}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vc.Close() })
	s, err := vc.TransitSigner(context.Background(), vaultsrc.TransitKeyConfig{Mount: mount, Key: "dpop"})
	if err != nil {
		b.Fatal(err)
	}
	benchProof(b, s)
}
