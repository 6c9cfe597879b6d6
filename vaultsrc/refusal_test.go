package vaultsrc

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// A KV version that does not parse is read once, logged once and reported
// once as refused; later polls read only the metadata, and health stays
// failing until a good version is stored.
func TestKVCertRefusedVersionReadOnce(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	ca := newTestCA(t)
	c := rootClient(t, srv)
	pfx1, _, _, _ := ca.clientPFX(t, "good", 1, "pass-one")
	srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx1, "passcode": "pass-one"})
	log, capture := testlog.New(t)
	capture.ForbidStrings("pass-one", "pass-two", "wrong-pass", pfx1[:40])
	var results []certs.Result
	holder := certs.NewHolder(nil)
	r := &certs.Reloader{Name: "refused", Holder: holder, Log: log, Report: func(res certs.Result) { results = append(results, res) },
		Source: c.KVCertSource(KVCertConfig{Mount: mount, Path: "bank/client", PKCS12Field: "pfx", PasscodeField: "passcode"})}
	if err := r.Load(t.Context()); err != nil {
		t.Fatal(err)
	}

	pfx2, _, _, leaf2 := ca.clientPFX(t, "next", 2, "pass-two")
	srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx2, "passcode": "wrong-pass"})
	if changed, err := r.Poll(t.Context()); changed || !certs.IsRefused(err) || !errors.Is(err, certs.ErrWrongPasscode) {
		t.Fatalf("Poll of a bad version = %v, %v; want a refusal for the passcode", changed, err)
	}
	for i := range 5 {
		before := c.Stats().Requests
		if changed, err := r.Poll(t.Context()); changed || err != nil {
			t.Fatalf("poll %d of the refused version = %v, %v; want unchanged", i, changed, err)
		}
		if n := c.Stats().Requests - before; n != 1 {
			t.Fatalf("poll %d of the refused version made %d requests to Vault, want 1 (metadata only)", i, n)
		}
		if err := c.Health().Err(); err == nil || !strings.Contains(err.Error(), "passcode") {
			t.Fatalf("poll %d: health %v, want failing with the refusal", i, err)
		}
	}
	if n := capture.Count("certificate reload failed"); n != 1 {
		t.Fatalf("refusal logged %d times, want once", n)
	}
	if got := holder.Load().Leaf.Subject.CommonName; got != "good" {
		t.Fatalf("serving %q after a refused rotation", got)
	}

	srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx2, "passcode": "pass-two"})
	if changed, err := r.Poll(t.Context()); !changed || err != nil {
		t.Fatalf("Poll of the fixed version = %v, %v", changed, err)
	}
	if holder.Load().Leaf.SerialNumber.Cmp(leaf2.SerialNumber) != 0 || !c.Health().OK {
		t.Fatalf("after the fix: serial %s, health %v", holder.Load().Leaf.SerialNumber, c.Health().Err())
	}
	if want := []certs.Result{certs.Refused, certs.Success}; !slices.Equal(results, want) {
		t.Fatalf("results %v, want %v", results, want)
	}
}

// A Transit key has one health entry: a signature that failed during an
// outage is cleared by the certificate source's next good poll, without a
// signature. Polls during the outage report the source unreachable once,
// never refused.
func TestTransitHealthOneEntry(t *testing.T) {
	srv := vaulttest.StartOwn(t)
	mount := setupTransit(t, srv)
	c := rootClient(t, srv, WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	ca := newTestCA(t)
	key := TransitKeyConfig{Mount: mount, Key: "ec"}
	ts, err := c.TransitSigner(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pemCert(ca.issue(t, "qseal", 77, ts.Public())) + pemCert(ca.cert)
	path := vaulttest.Unique("qseal")
	srv.PutKV("secret", path, map[string]any{"certificate": certPEM})
	log, _ := testlog.New(t)
	var results []certs.Result
	holder := certs.NewHolder(nil)
	r := &certs.Reloader{Name: "qseal", Holder: holder, Log: log, Report: func(res certs.Result) { results = append(results, res) },
		Source: c.TransitCertSource(TransitCertConfig{Key: key, Certificate: secret.VaultRef{Mount: "secret", Path: path, Field: "certificate"}})}
	if err := r.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	signer := holder.Load().PrivateKey.(*TransitSigner)
	digest := sha256.Sum256([]byte("payload"))
	if _, err := signer.Sign(nil, digest[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	if _, err := signer.Sign(nil, digest[:], crypto.SHA256); err == nil {
		t.Fatal("signed with Vault stopped")
	}
	for range 3 {
		if _, err := r.Poll(t.Context()); err == nil || certs.IsRefused(err) {
			t.Fatalf("poll during the outage: %v, want a read failure", err)
		}
	}
	if c.Health().OK {
		t.Fatal("health OK during the outage")
	}

	srv.Restart() // empty: the certificate is written again, as persistent storage would keep it
	srv.PutKV("secret", path, map[string]any{"certificate": certPEM})
	waitFor(t, 5*time.Second, "a good poll after Vault returned", func() bool {
		_, err := r.Poll(t.Context())
		return err == nil
	})
	h := c.Health()
	if !h.OK {
		t.Fatalf("health after a good poll and no signature: %v", h.Err())
	}
	var names []string
	for _, comp := range h.Components {
		if strings.HasPrefix(comp.Name, "vault transit") {
			names = append(names, comp.Name)
		}
	}
	if want := []string{"vault transit " + mount + "/keys/ec"}; !slices.Equal(names, want) {
		t.Fatalf("transit health entries %q, want %q", names, want)
	}
	if want := []certs.Result{certs.Unreachable}; !slices.Equal(results, want) {
		t.Fatalf("results %v, want %v", results, want)
	}
}
