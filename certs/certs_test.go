package certs_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

func mustCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustClient(t *testing.T, ca *pki.CA, cn string, opts ...pki.Option) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueClient(cn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParse(t *testing.T) {
	ca := mustCA(t)
	good := mustClient(t, ca, "good", pki.WithKeyType(pki.RSA2048))
	other := mustClient(t, ca, "other")
	pfx, _ := pki.EncodePFX(good, "pass")
	legacy, _ := pki.EncodeLegacyPFX(good, "pass")
	certPEM, keyPEM, _ := pki.EncodePEM(good)
	_, otherKey, _ := pki.EncodePEM(other)

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
	expired := mustClient(t, ca, "old", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	future := mustClient(t, ca, "new", pki.WithValidity(now.Add(time.Hour), now.Add(48*time.Hour)))
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
// the old certificate serving and is logged and reported once per version,
// however often it is polled; a missing file is reported once as
// unreachable. No passcode reaches the log, in any field.
func TestReloaderRotation(t *testing.T) {
	ca := mustCA(t)
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("s3cret-passcode\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	first := mustClient(t, ca, "first")
	files, err := pki.WriteFiles(dir, "client", first, "s3cret-passcode")
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := secret.Ref{File: passFile}.Open(nil)
	log, capture := testlog.New(t)
	capture.ForbidStrings("s3cret-passcode", "new-passcode")
	h := certs.NewHolder(nil)
	var results []certs.Result
	rl := &certs.Reloader{Name: "test", Holder: h, Source: &certs.FileSource{PKCS12File: files.PFX, Passcode: pass},
		Log: log, Report: func(r certs.Result) { results = append(results, r) }}
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
	if _, err := pki.WriteFiles(dir, "client", second, "s3cret-passcode"); err != nil {
		t.Fatal(err)
	}
	if changed, err := rl.Poll(ctx); !changed || err != nil {
		t.Fatalf("rotation not picked up: %v", err)
	}
	if cn := h.Load().Leaf.Subject.CommonName; cn != "second" || swaps != 1 {
		t.Fatalf("holder serves %q after %d swaps", cn, swaps)
	}

	// Corrupt replacement: old keeps serving, logged and reported once.
	if err := pki.WriteFileAtomic(files.PFX, []byte("not a pfx"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.Poll(ctx); !certs.IsRefused(err) {
		t.Fatalf("corrupt file: %v, want a refusal", err)
	}
	for range 3 {
		if changed, _ := rl.Poll(ctx); changed {
			t.Fatal("corrupt file accepted")
		}
	}
	if cn := h.Load().Leaf.Subject.CommonName; cn != "second" {
		t.Fatalf("corrupt rotation replaced the certificate: %q", cn)
	}
	if n := capture.Count("certificate reload failed; the previous certificate keeps serving"); n != 1 {
		t.Fatalf("failure logged %d times, want once", n)
	}
	// Missing file: unreachable, reported once over several polls.
	if err := os.Remove(files.PFX); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := rl.Poll(ctx); err == nil || certs.IsRefused(err) {
			t.Fatalf("missing file: %v, want a read failure", err)
		}
	}
	if n := capture.Count("certificate source unreachable"); n != 1 {
		t.Fatalf("unreachable source logged %d times, want once", n)
	}
	// Expired replacement: refused too, once.
	now := time.Now()
	old := mustClient(t, ca, "expired", pki.WithValidity(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	if _, err := pki.WriteFiles(dir, "client", old, "s3cret-passcode"); err != nil {
		t.Fatal(err)
	}
	var ee *certs.ExpiredError
	if _, err := rl.Poll(ctx); !errors.As(err, &ee) || h.Load().Leaf.Subject.CommonName != "second" {
		t.Fatalf("expired replacement: err=%v serving %q", err, h.Load().Leaf.Subject.CommonName)
	}
	if changed, err := rl.Poll(ctx); changed || err != nil {
		t.Fatalf("the refused version polled again: %v, %v; want unchanged", changed, err)
	}
	// Passcode rotated together with a new file: picked up.
	third := mustClient(t, ca, "third")
	if _, err := pki.WriteFiles(dir, "client", third, "new-passcode"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passFile, []byte("new-passcode"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := rl.Poll(ctx); !changed || h.Load().Leaf.Subject.CommonName != "third" {
		t.Fatalf("passcode rotation: %v", err)
	}
	want := []certs.Result{certs.Success, certs.Refused, certs.Unreachable, certs.Refused, certs.Success}
	if swaps != 2 || !slices.Equal(results, want) {
		t.Fatalf("swaps %d, results %v, want %v", swaps, results, want)
	}
}

// A version refused because it is not valid yet is not fetched again until
// its NotBefore has passed; then it is stored without a new version.
func TestReloaderNotYetValid(t *testing.T) {
	ca := mustCA(t)
	dir := t.TempDir()
	now := time.Now()
	clock := now
	files, err := pki.WriteFiles(dir, "client", mustClient(t, ca, "current"), "")
	if err != nil {
		t.Fatal(err)
	}
	log, capture := testlog.New(t)
	h := certs.NewHolder(nil)
	var results []certs.Result
	rl := &certs.Reloader{Name: "nyv", Holder: h, Source: &certs.FileSource{CertFile: files.Cert, KeyFile: files.Key},
		Log: log, Now: func() time.Time { return clock }, Report: func(r certs.Result) { results = append(results, r) }}
	ctx := context.Background()
	if err := rl.Load(ctx); err != nil {
		t.Fatal(err)
	}
	early := mustClient(t, ca, "early", pki.WithValidity(now.Add(time.Hour), now.Add(48*time.Hour)))
	if _, err := pki.WriteFiles(dir, "client", early, ""); err != nil {
		t.Fatal(err)
	}
	var nyv *certs.NotYetValidError
	for i := range 3 {
		clock = clock.Add(10 * time.Minute)
		if _, err := rl.Poll(ctx); i == 0 && !errors.As(err, &nyv) {
			t.Fatalf("early certificate: %v, want NotYetValidError", err)
		}
	}
	if n := capture.Count("certificate reload failed"); n != 1 || h.Load().Leaf.Subject.CommonName != "current" {
		t.Fatalf("logged %d times, serving %q", n, h.Load().Leaf.Subject.CommonName)
	}
	clock = now.Add(time.Hour + time.Second)
	if changed, err := rl.Poll(ctx); !changed || err != nil || h.Load().Leaf.Subject.CommonName != "early" {
		t.Fatalf("after NotBefore: changed %v, %v", changed, err)
	}
	if want := []certs.Result{certs.Refused, certs.Success}; !slices.Equal(results, want) {
		t.Fatalf("results %v, want %v", results, want)
	}
}

func TestHolderBeforeLoad(t *testing.T) {
	h := certs.NewHolder(nil)
	if _, err := h.GetClientCertificate(nil); err == nil {
		t.Fatal("empty holder handed out a certificate")
	}
}
