package consentstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

var testKey = ring(bytes.Repeat([]byte{7}, KeySize))

// ring is the keyring of key alone (DefaultKeyID).
func ring(key []byte) *Keyring {
	r, err := SingleKey(key)
	if err != nil {
		panic(err)
	}
	return r
}

func sample(subject string) *Consent {
	return &Consent{Route: "bpce", Owner: "app-a", Subject: subject, State: Active,
		RefreshToken: secret.New("rt-secret-" + subject), AccessToken: secret.New("at-secret-" + subject),
		Scopes: []string{"aisp"}, Created: time.Unix(1_800_000_000, 0).UTC(), RefreshExpiry: time.Unix(1_807_776_000, 0).UTC()}
}

// opener opens the same store again (after a restart).
type opener func(t *testing.T) Store

func boltOpener(t *testing.T) opener {
	path := filepath.Join(t.TempDir(), "consents.db")
	return func(t *testing.T) Store {
		s, err := OpenBolt(path, testKey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

func vaultOpener(t *testing.T) opener {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("consents")
	srv.Mount(mount, "kv-v2")
	return func(t *testing.T) Store { return NewVault(vaultClient(t, srv), mount, "tokenproxy") }
}

// vaultClient is a vaultsrc client logged in to srv with its root token: the
// client through which tokenproxy reaches the consent store.
func vaultClient(t testing.TB, srv *vaulttest.Server, opts ...vaultsrc.Option) *vaultsrc.Client {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tok, []byte(srv.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := vaultsrc.New(context.Background(), vaultsrc.Config{Address: srv.Addr, Timeout: 5 * time.Second,
		Auth: vaultsrc.AuthConfig{Method: vaultsrc.MethodToken, Token: &vaultsrc.TokenAuth{File: tok}}}, opts...)
	if err != nil {
		t.Fatalf("vault client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestStores(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) opener
	}{{"bolt", boltOpener}, {"vault", vaultOpener}, {"postgres", postgresOpener}} {
		t.Run(tc.name, func(t *testing.T) {
			open := tc.open(t)
			with := func(f func(*testing.T, Store)) func(*testing.T) {
				return func(t *testing.T) {
					s := open(t)
					defer s.Close()
					f(t, s)
				}
			}
			t.Run("CAS", with(testCAS))
			t.Run("ReopenKeepsEveryConsent", func(t *testing.T) { testReopen(t, open) })
			t.Run("Owners", with(testOwners))
			t.Run("ConcurrentCASOneWinner", with(testConcurrentCAS))
		})
	}
}

func testCAS(t *testing.T, s Store) {
	ctx := context.Background()
	c := sample("cas")
	if _, err := s.Get(ctx, c.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a missing consent: %v, want ErrNotFound", err)
	}
	g1, err := s.Put(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, c, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}
	c.RefreshToken = secret.New("rt-2")
	g2, err := s.Put(ctx, c, g1)
	if err != nil || g2 != g1+1 {
		t.Fatalf("update: gen %d err %v; want %d", g2, err, g1+1)
	}
	if _, err := s.Put(ctx, c, g1); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v, want ErrConflict", err)
	}
	got, err := s.Get(ctx, c.Key())
	if err != nil || got.Generation != g2 || got.RefreshToken.Reveal() != "rt-2" || got.Scopes[0] != "aisp" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if err := s.Delete(ctx, c.Key()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, c.Key()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
}

func testReopen(t *testing.T, open opener) {
	ctx := context.Background()
	s := open(t)
	const n = 20
	for i := range n {
		if _, err := s.Put(ctx, sample("psu"+string(rune('a'+i))), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t)
	defer s.Close()
	all, err := s.List(ctx, Filter{Route: "bpce", Owner: "app-a"})
	if err != nil || len(all) < n {
		t.Fatalf("after reopen: %d consents, %v; want %d", len(all), err, n)
	}
	for i := range n {
		sub := "psu" + string(rune('a'+i))
		c, err := s.Get(ctx, Key{"bpce", "app-a", sub})
		if err != nil || c.RefreshToken.Reveal() != "rt-secret-"+sub {
			t.Fatalf("subject %s after reopen: %v", sub, err)
		}
	}
}

func testOwners(t *testing.T, s Store) {
	ctx := context.Background()
	a, b := sample("shared-name"), sample("shared-name")
	b.Owner, b.RefreshToken = "app-b", secret.New("rt-of-b")
	for _, c := range []*Consent{a, b} {
		if _, err := s.Put(ctx, c, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, b.Key())
	if err != nil || got.RefreshToken.Reveal() != "rt-of-b" {
		t.Fatalf("owner b's consent: %v", err)
	}
	list, err := s.List(ctx, Filter{Route: "bpce", Owner: "app-b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.Owner != "app-b" {
			t.Fatalf("List for app-b returned a consent of %q", c.Owner)
		}
	}
	if len(list) != 1 {
		t.Fatalf("List for app-b: %d consents, want 1", len(list))
	}
	every, err := s.List(ctx, Filter{AnyOwner: true})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]bool{}
	for _, c := range every {
		if c.Subject == "shared-name" {
			owners[c.Owner] = true
		}
	}
	if !owners["app-a"] || !owners["app-b"] {
		t.Fatalf("List of every owner found %v", owners)
	}
}

func testConcurrentCAS(t *testing.T, s Store) {
	ctx := context.Background()
	c := sample("race")
	g, err := s.Put(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			if _, err := s.Put(ctx, c, g); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrConflict) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent writers at one generation succeeded; want exactly 1", wins)
	}
}

func TestBoltWrongKeyIsAStartupError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(context.Background(), sample("x"), 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	other := bytes.Repeat([]byte{9}, KeySize)
	if _, err := OpenBolt(path, ring(other)); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), path) {
		t.Fatalf("wrong key: %v; want ErrWrongKey naming the file", err)
	}
	if _, err := SingleKey(nil); err == nil || !strings.Contains(err.Error(), "32") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestBoltFileHoldsNoPlaintext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	c := sample("plain")
	if _, err := s.Put(context.Background(), c, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, secretText := range []string{c.RefreshToken.Reveal(), c.AccessToken.Reveal(), "aisp"} {
		if bytes.Contains(raw, []byte(secretText)) {
			t.Fatalf("the store file holds %q in clear", secretText)
		}
	}
}

func TestSealedValueBoundToItsKey(t *testing.T) {
	s := testKey
	k := Key{"r", "o", "s"}
	box := s.seal([]byte("x"), aad(k, 3))
	for _, tc := range []struct {
		name string
		k    Key
		gen  uint64
	}{{"other subject", Key{"r", "o", "t"}, 3}, {"other owner", Key{"r", "p", "s"}, 3}, {"other generation", k, 4}} {
		if _, err := s.open(box, aad(tc.k, tc.gen)); err == nil {
			t.Errorf("%s: value opened", tc.name)
		}
	}
	if _, err := s.open(box, aad(k, 3)); err != nil {
		t.Fatal(err)
	}
}

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{strings.Repeat("ab", 32), true},
		{"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", true},
		{"short", false},
		{strings.Repeat("ab", 16), false},
	} {
		k, err := ParseKey(secret.New(tc.in))
		if (err == nil) != tc.ok || (tc.ok && len(k) != KeySize) {
			t.Errorf("ParseKey(%q) = %d bytes, %v", tc.in, len(k), err)
		}
		if err != nil && strings.Contains(err.Error(), tc.in) {
			t.Errorf("error echoes the key")
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		k  Key
		ok bool
	}{
		{Key{"bpce", "", "psu-42@bank"}, true},
		{Key{"bpce", "app-a", "PSU_42"}, true},
		{Key{"bpce", "app/a", "x"}, false},
		{Key{"bpce", "", "a/b"}, false},
		{Key{"bpce", "", ""}, false},
		{Key{"", "", "x"}, false},
		{Key{"bpce", "", "a b"}, false},
		{Key{"bpce", "", "a?b"}, false},
		{Key{"bpce", "", strings.Repeat("x", 201)}, false},
	} {
		if err := ValidateKey(tc.k); (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%+v) = %v", tc.k, err)
		}
	}
}
