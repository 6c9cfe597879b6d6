package certs_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/internal/testpki"
	"github.com/tokenproxy/tokenproxy/secret"
)

func mustCA(t *testing.T) *testpki.CA {
	t.Helper()
	ca, err := testpki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustClient(t *testing.T, ca *testpki.CA, cn string, opts ...testpki.Option) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueClient(cn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParse(t *testing.T) {
	ca := mustCA(t)
	good := mustClient(t, ca, "good", testpki.WithKeyType(testpki.RSA2048))
	other := mustClient(t, ca, "other")
	pfx, _ := testpki.EncodePFX(good, "pass")
	legacy, _ := testpki.EncodeLegacyPFX(good, "pass")
	certPEM, keyPEM, _ := testpki.EncodePEM(good)
	_, otherKey, _ := testpki.EncodePEM(other)

	tests := []struct {
		name  string
		parse func() (*tls.Certificate, error)
		want  error
	}{
		{"pfx", func() (*tls.Certificate, error) { return certs.ParsePKCS12(pfx, "pass") }, nil},
		{"legacy pfx", func() (*tls.Certificate, error) { return certs.ParsePKCS12(legacy, "pass") }, nil},
		{"wrong passcode", func() (*tls.Certificate, error) { return certs.ParsePKCS12(pfx, "nope") }, certs.ErrWrongPasscode},
		{"pem", func() (*tls.Certificate, error) { return certs.ParsePEM(certPEM, keyPEM) }, nil},
		{"pem bundle", func() (*tls.Certificate, error) {
			b := append(append([]byte{}, certPEM...), keyPEM...)
			return certs.ParsePEM(b, b)
		}, nil},
		{"key mismatch", func() (*tls.Certificate, error) { return certs.ParsePEM(certPEM, otherKey) }, certs.ErrKeyMismatch},
		{"no key", func() (*tls.Certificate, error) { return certs.ParsePEM(certPEM, certPEM) }, certs.ErrNoKey},
		{"no cert", func() (*tls.Certificate, error) { return certs.ParsePEM(keyPEM, keyPEM) }, certs.ErrNoCertificate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.parse()
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if err != nil && strings.Contains(err.Error(), "pass") && !errors.Is(tc.want, certs.ErrWrongPasscode) {
					t.Fatalf("error mentions the passcode: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Leaf == nil || c.Leaf.Subject.CommonName != "good" {
				t.Fatalf("leaf %+v", c.Leaf)
			}
			if err := certs.Check(c, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCheckValidity(t *testing.T) {
	ca := mustCA(t)
	now := time.Now()
	expired := mustClient(t, ca, "old", testpki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	future := mustClient(t, ca, "new", testpki.WithValidity(now.Add(time.Hour), now.Add(48*time.Hour)))
	var ee *certs.ExpiredError
	if err := certs.Check(expired, now); !errors.As(err, &ee) || !strings.Contains(err.Error(), "expired on") {
		t.Fatalf("expired: %v", err)
	}
	var ne *certs.NotYetValidError
	if err := certs.Check(future, now); !errors.As(err, &ne) {
		t.Fatalf("not yet valid: %v", err)
	}
}

// A rotation on disk is picked up; a corrupt or expired replacement leaves
// the old certificate serving and is logged once.
func TestReloaderRotation(t *testing.T) {
	ca := mustCA(t)
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("s3cret-passcode\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	first := mustClient(t, ca, "first")
	files, err := testpki.WriteFiles(dir, "client", first, "s3cret-passcode")
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := secret.Ref{File: passFile}.Open(nil)
	core, logs := observer.New(zap.InfoLevel)
	h := certs.NewHolder(nil)
	var results []bool
	rl := &certs.Reloader{Name: "test", Holder: h, Source: &certs.FileSource{PKCS12File: files.PFX, Passcode: pass},
		Log: zap.New(core), OnResult: func(ok bool) { results = append(results, ok) }}
	ctx := context.Background()
	if err := rl.Load(ctx); err != nil {
		t.Fatal(err)
	}
	var swaps int
	h.Subscribe(func(*tls.Certificate) { swaps++ })
	if changed, _ := rl.Poll(ctx); changed {
		t.Fatal("unchanged file reported as changed")
	}

	second := mustClient(t, ca, "second")
	if _, err := testpki.WriteFiles(dir, "client", second, "s3cret-passcode"); err != nil {
		t.Fatal(err)
	}
	if changed, err := rl.Poll(ctx); !changed || err != nil {
		t.Fatalf("rotation not picked up: %v", err)
	}
	if cn := h.Load().Leaf.Subject.CommonName; cn != "second" || swaps != 1 {
		t.Fatalf("holder serves %q after %d swaps", cn, swaps)
	}

	// Corrupt replacement: old keeps serving, logged once.
	if err := testpki.WriteFileAtomic(files.PFX, []byte("not a pfx"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := rl.Poll(ctx); err == nil {
			t.Fatal("corrupt file accepted")
		}
	}
	if cn := h.Load().Leaf.Subject.CommonName; cn != "second" {
		t.Fatalf("corrupt rotation replaced the certificate: %q", cn)
	}
	if n := logs.FilterMessage("certificate reload failed; the previous certificate keeps serving").Len(); n != 1 {
		t.Fatalf("failure logged %d times, want once", n)
	}
	// Expired replacement: refused too.
	now := time.Now()
	old := mustClient(t, ca, "expired", testpki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	if _, err := testpki.WriteFiles(dir, "client", old, "s3cret-passcode"); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.Poll(ctx); err == nil || h.Load().Leaf.Subject.CommonName != "second" {
		t.Fatalf("expired replacement: err=%v serving %q", err, h.Load().Leaf.Subject.CommonName)
	}
	// Passcode rotated together with a new file: picked up.
	third := mustClient(t, ca, "third")
	if _, err := testpki.WriteFiles(dir, "client", third, "new-passcode"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passFile, []byte("new-passcode"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := rl.Poll(ctx); !changed || h.Load().Leaf.Subject.CommonName != "third" {
		t.Fatalf("passcode rotation: %v", err)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "passcode") && strings.Contains(f.String, "s3cret") {
				t.Fatalf("log carries the passcode: %v", e)
			}
		}
		if strings.Contains(e.Message, "s3cret") || strings.Contains(e.Message, "new-passcode") {
			t.Fatalf("log carries the passcode: %v", e)
		}
	}
	if swaps != 2 || len(results) == 0 {
		t.Fatalf("swaps %d results %v", swaps, results)
	}
}

func TestHolderBeforeLoad(t *testing.T) {
	h := certs.NewHolder(nil)
	if _, err := h.GetClientCertificate(nil); err == nil {
		t.Fatal("empty holder handed out a certificate")
	}
}
