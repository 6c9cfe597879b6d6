package vaultsrc

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

func TestKVCertSource(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	ca := newTestCA(t)
	c := rootClient(t, srv)

	t.Run("pkcs12 rotation", func(t *testing.T) {
		pfx1, _, _, leaf1 := ca.clientPFX(t, "client-1", 101, "pass-1")
		srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx1, "passcode": "pass-1"})
		log, logs := observed()
		src := c.KVCertSource(KVCertConfig{Mount: mount, Path: "bank/client", PKCS12Field: "pfx", PasscodeField: "passcode"})
		holder := certs.NewHolder(nil)
		r := &certs.Reloader{Name: "test", Holder: holder, Source: src, Log: log}
		if err := r.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := holder.Load().Leaf.SerialNumber.Int64(); got != leaf1.SerialNumber.Int64() {
			t.Fatalf("serial = %d", got)
		}
		// Same version: nothing read beyond the metadata.
		before := c.Stats().Requests
		if changed, err := r.Poll(t.Context()); changed || err != nil {
			t.Fatalf("Poll without change = %v, %v", changed, err)
		}
		if n := c.Stats().Requests - before; n != 1 {
			t.Fatalf("an unchanged poll made %d requests, want 1 (metadata only)", n)
		}
		// A bad new version (wrong passcode) keeps the old certificate.
		pfx2, _, _, leaf2 := ca.clientPFX(t, "client-2", 102, "pass-2")
		srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx2, "passcode": "wrong"})
		if changed, err := r.Poll(t.Context()); changed || !errors.Is(err, certs.ErrWrongPasscode) {
			t.Fatalf("Poll of a bad version = %v, %v", changed, err)
		}
		if got := holder.Load().Leaf.SerialNumber.Int64(); got != 101 {
			t.Fatalf("bad rotation replaced the certificate: serial %d", got)
		}
		if c.Health().OK {
			t.Fatal("health OK after a failed rotation")
		}
		// Garbage in the pfx field likewise.
		srv.PutKV(mount, "bank/client", map[string]any{"pfx": "!!not base64!!", "passcode": "pass-2"})
		if changed, err := r.Poll(t.Context()); changed || err == nil {
			t.Fatalf("Poll of garbage = %v, %v", changed, err)
		}
		// The fixed version is picked up.
		srv.PutKV(mount, "bank/client", map[string]any{"pfx": pfx2, "passcode": "pass-2"})
		if changed, err := r.Poll(t.Context()); !changed || err != nil {
			t.Fatalf("Poll of a good version = %v, %v", changed, err)
		}
		if got := holder.Load().Leaf.SerialNumber.Int64(); got != leaf2.SerialNumber.Int64() {
			t.Fatalf("serial after rotation = %d", got)
		}
		if !c.Health().OK {
			t.Fatalf("health after recovery: %v", c.Health().Err())
		}
		assertNotLogged(t, logs, "pass-1", "pass-2", pfx1[:40], pfx2[:40])
	})

	t.Run("pem", func(t *testing.T) {
		_, certPEM, keyPEM, leaf := ca.clientPFX(t, "client-pem", 201, "x")
		srv.PutKV(mount, "bank/pem", map[string]any{"certificate": certPEM + pemCert(ca.cert), "key": keyPEM})
		src := c.KVCertSource(KVCertConfig{Mount: mount, Path: "bank/pem", CertField: "certificate", KeyField: "key"})
		cert, v, err := src.Fetch(t.Context(), "")
		if err != nil || v != "1" || cert.Leaf.SerialNumber.Int64() != leaf.SerialNumber.Int64() || len(cert.Certificate) != 2 {
			t.Fatalf("Fetch = %v, %q, %v", cert, v, err)
		}
		// A key that does not match the certificate is refused.
		_, _, otherKey, _ := ca.clientPFX(t, "other", 202, "x")
		srv.PutKV(mount, "bank/pem", map[string]any{"certificate": certPEM, "key": otherKey})
		if cert, v, err := src.Fetch(t.Context(), "1"); cert != nil || v != "2" || !errors.Is(err, certs.ErrKeyMismatch) {
			t.Fatalf("Fetch of a mismatched pair = %v, %q, %v", cert, v, err)
		}
	})

	t.Run("rotation reaches new handshakes", func(t *testing.T) {
		pfx1, _, _, _ := ca.clientPFX(t, "hs-1", 301, "p")
		srv.PutKV(mount, "bank/hs", map[string]any{"pfx": pfx1, "passcode": "p"})
		src := c.KVCertSource(KVCertConfig{Mount: mount, Path: "bank/hs", PKCS12Field: "pfx", PasscodeField: "passcode"})
		holder := certs.NewHolder(nil)
		log, _ := observed()
		r := &certs.Reloader{Name: "hs", Holder: holder, Source: src, Log: log, Interval: 100 * time.Millisecond}
		if err := r.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		go r.Run(t.Context())
		url, tlsFor := mtlsServer(t, ca.cert)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsFor(holder.GetClientCertificate), DisableKeepAlives: true}}
		serial := func() string {
			resp, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		if s := serial(); s != "12d" { // 301
			t.Fatalf("upstream saw serial %s", s)
		}
		pfx2, _, _, _ := ca.clientPFX(t, "hs-2", 302, "p")
		rotated := time.Now()
		srv.PutKV(mount, "bank/hs", map[string]any{"pfx": pfx2, "passcode": "p"})
		waitFor(t, 2*time.Second, "the rotated certificate at the upstream", func() bool { return serial() == "12e" })
		t.Logf("rotation pickup: %s with a 100ms poll interval", time.Since(rotated).Round(time.Millisecond))
	})
}
