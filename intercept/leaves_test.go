package intercept

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestLeafCertificate(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	allow := allowOnly("bank.example", "127.0.0.1", "::1")
	tests := []struct {
		name       string
		host       string
		wantReason Reason // "" for success
		wantDNS    string
		wantIP     string
	}{
		{"dns host", "bank.example", "", "bank.example", ""},
		{"dns host with port and case", "Bank.Example.:443", "", "bank.example", ""},
		{"ipv4 host", "127.0.0.1:8443", "", "", "127.0.0.1"},
		{"ipv6 host", "[::1]:443", "", "", "::1"},
		{"not intercepted", "other.example", ReasonNotIntercepted, "", ""},
		{"subdomain not intercepted", "api.bank.example", ReasonNotIntercepted, "", ""},
		{"wildcard", "*.bank.example", ReasonBadHost, "", ""},
		{"empty", "", ReasonBadHost, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := &countObserver{}
			l := NewLeaves(ca, LeafConfig{TTL: 6 * time.Hour, Observer: obs})
			c, err := l.Certificate(context.Background(), tc.host, allow)
			if tc.wantReason != "" {
				var re *RefusedError
				if !errors.As(err, &re) || re.Reason != tc.wantReason {
					t.Fatalf("Certificate(%q) = %v, want a refusal %s", tc.host, err, tc.wantReason)
				}
				if l.Len() != 0 {
					t.Fatalf("a refused host left %d cached leaves", l.Len())
				}
				return
			}
			if err != nil {
				t.Fatalf("Certificate(%q): %v", tc.host, err)
			}
			leaf := c.Leaf
			switch {
			case tc.wantDNS != "":
				if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != tc.wantDNS || len(leaf.IPAddresses) != 0 {
					t.Fatalf("SANs = %v %v, want only %s", leaf.DNSNames, leaf.IPAddresses, tc.wantDNS)
				}
				verifyLeaf(t, c, ca.Certificate(), tc.wantDNS)
			default:
				if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != tc.wantIP || len(leaf.DNSNames) != 0 {
					t.Fatalf("SANs = %v %v, want only %s", leaf.DNSNames, leaf.IPAddresses, tc.wantIP)
				}
				verifyLeaf(t, c, ca.Certificate(), tc.wantIP)
			}
			k, ok := c.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || k.Curve != elliptic.P256() {
				t.Fatalf("leaf key is %T, want ECDSA P-256", c.PrivateKey)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life != 6*time.Hour+clockSkew {
				t.Fatalf("leaf lifetime %v, want 6h plus %v of clock skew", life, clockSkew)
			}
			if leaf.IsCA {
				t.Fatal("leaf is a CA")
			}
		})
	}
}

func TestLeafCache(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	now := time.Now()
	clock := func() time.Time { return now }
	obs := &countObserver{}
	l := NewLeaves(ca, LeafConfig{TTL: 3 * time.Hour, CacheSize: 2, Now: clock, Observer: obs})
	allow := allowOnly("a.example", "b.example", "c.example")
	get := func(h string) *tls.Certificate {
		t.Helper()
		c, err := l.Certificate(context.Background(), h, allow)
		if err != nil {
			t.Fatalf("Certificate(%s): %v", h, err)
		}
		return c
	}
	a1 := get("a.example")
	if a2 := get("a.example"); a2 != a1 {
		t.Fatal("second request for a.example was not served from the cache")
	}
	if obs.get("issued a.example") != 1 || obs.get("hit a.example") != 1 {
		t.Fatalf("observer saw %v", obs.n)
	}
	get("b.example")
	get("a.example") // a is now the most recently used
	get("c.example") // evicts b
	if l.Len() != 2 {
		t.Fatalf("cache holds %d leaves, want the bound 2", l.Len())
	}
	get("b.example")
	if obs.get("issued b.example") != 2 {
		t.Fatalf("b.example issued %d times, want 2 (evicted by the LRU bound)", obs.get("issued b.example"))
	}
	// Two thirds into the leaf's life a new one is signed.
	now = now.Add(2*time.Hour + time.Minute)
	if a3 := get("a.example"); a3 == a1 {
		t.Fatal("a leaf two thirds through its life was still served")
	}
}

func TestLeafAfterRotation(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	l := NewLeaves(ca, LeafConfig{})
	allow := allowOnly("bank.example")
	before, err := l.Certificate(context.Background(), "bank.example", allow)
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := ca.Certificate()
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	after, err := l.Certificate(context.Background(), "bank.example", allow)
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatal("after rotation the cached leaf of the old CA was served")
	}
	verifyLeaf(t, after, ca.Certificate(), "bank.example")
	if err := after.Leaf.CheckSignatureFrom(oldRoot); err == nil {
		t.Fatal("the new leaf is signed by the old CA")
	}
}

func TestLeafSingleFlight(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	obs := &countObserver{}
	l := NewLeaves(ca, LeafConfig{Observer: obs})
	allow := allowOnly("bank.example")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := l.Certificate(context.Background(), "bank.example", allow); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := obs.get("issued bank.example"); n != 1 {
		t.Fatalf("16 concurrent handshakes signed %d leaves, want 1", n)
	}
}

func TestLeafRateLimit(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	obs := &countObserver{}
	l := NewLeaves(ca, LeafConfig{IssueRate: 0.001, IssueBurst: 2, MaxWait: time.Millisecond, Observer: obs})
	allow := allowOnly("a.example", "b.example", "c.example")
	for _, h := range []string{"a.example", "b.example"} {
		if _, err := l.Certificate(context.Background(), h, allow); err != nil {
			t.Fatalf("%s within the burst: %v", h, err)
		}
	}
	_, err := l.Certificate(context.Background(), "c.example", allow)
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != ReasonRateLimited {
		t.Fatalf("third distinct host past the burst: %v, want rate_limited", err)
	}
	if obs.get("refused c.example rate_limited") != 1 {
		t.Fatalf("observer saw %v", obs.n)
	}
	// Cached hosts are still served while issuance is limited.
	if _, err := l.Certificate(context.Background(), "a.example", allow); err != nil {
		t.Fatalf("cached host while rate limited: %v", err)
	}
}
