package oauth

import (
	"context"
	"errors"
	"testing"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Confirm reads the consent store only: a stored consent stands, a deleted
// one is consent_required.
func TestConfirm(t *testing.T) {
	e := newEnv(t, false)
	a := e.authCode(t, boltStore(t), nil, nil)
	e.consent(t, a, "", "alice")
	issued := len(e.h.TokenRequests())
	if err := a.Confirm(t.Context(), "alice"); err != nil {
		t.Fatalf("a stored consent: %v", err)
	}
	if err := a.Revoke(t.Context(), "", "alice"); err != nil {
		t.Fatal(err)
	}
	var ce *tokencache.ConsentRequiredError
	if err := a.Confirm(t.Context(), "alice"); !errors.As(err, &ce) || ce.Subject != "alice" {
		t.Fatalf("a deleted consent: %v; want consent_required", err)
	}
	if n := len(e.h.TokenRequests()) - issued; n != 0 {
		t.Fatalf("Confirm sent %d token requests", n)
	}
}

// BenchmarkConfirm is the cost of one confirmation (one consent store read,
// at most once per customer per second per process): bbolt, and Vault KV
// when a Vault dev server is at hand.
func BenchmarkConfirm(b *testing.B) {
	e := newEnv(b, false)
	stores := map[string]func(b *testing.B) consentstore.Store{
		"bbolt": func(b *testing.B) consentstore.Store { s, _ := tempBolt(b); return s },
		"vault-kv": func(b *testing.B) consentstore.Store {
			if testing.Short() {
				b.Skip("needs a Vault dev server")
			}
			srv := vaulttest.Start(b)
			mount := vaulttest.Unique("consents")
			srv.Mount(mount, "kv-v2")
			return consentstore.NewVault(vaultClient(b, srv), mount, "tokenproxy")
		},
	}
	for _, name := range []string{"bbolt", "vault-kv"} {
		b.Run(name, func(b *testing.B) {
			a := e.authCode(b, stores[name](b), nil, nil)
			e.consent(b, a, "", "alice")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := a.Confirm(ctx, "alice"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
