package vaultsrc

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// setupTransit mounts Transit with non-exportable rsa, ecdsa and ed25519 keys.
func setupTransit(t testing.TB, srv *vaulttest.Server) string {
	t.Helper()
	mount := vaulttest.Unique("transit")
	srv.Mount(mount, "transit")
	for name, typ := range map[string]string{"rsa": "rsa-2048", "ec": "ecdsa-p256", "ed": "ed25519"} {
		srv.Write(mount+"/keys/"+name, map[string]any{"type": typ, "exportable": false})
	}
	return mount
}

func TestTransitSigner(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := setupTransit(t, srv)
	c := rootClient(t, srv)
	msg := []byte("date: Tue, 07 Jun 2014 20:51:35 GMT\ndigest: SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=")
	h256 := sha256.Sum256(msg)
	h512 := sha512.Sum512(msg)

	rsaSigner, err := c.TransitSigner(t.Context(), TransitKeyConfig{Mount: mount, Key: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	rsaPub := rsaSigner.Public().(*rsa.PublicKey)
	if rsaPub.N.BitLen() != 2048 {
		t.Fatalf("public key is %d bits", rsaPub.N.BitLen())
	}
	tests := []struct {
		name   string
		digest []byte
		opts   crypto.SignerOpts
		verify func(sig []byte) error
	}{
		{"rsa pkcs1v15 sha256", h256[:], crypto.SHA256, func(sig []byte) error {
			return rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, h256[:], sig)
		}},
		{"rsa pkcs1v15 sha512", h512[:], crypto.SHA512, func(sig []byte) error {
			return rsa.VerifyPKCS1v15(rsaPub, crypto.SHA512, h512[:], sig)
		}},
		{"rsa pss auto salt sha256", h256[:], &rsa.PSSOptions{Hash: crypto.SHA256}, func(sig []byte) error {
			return rsa.VerifyPSS(rsaPub, crypto.SHA256, h256[:], sig, nil)
		}},
		{"rsa pss salt equals hash sha512", h512[:], &rsa.PSSOptions{Hash: crypto.SHA512, SaltLength: rsa.PSSSaltLengthEqualsHash}, func(sig []byte) error {
			return rsa.VerifyPSS(rsaPub, crypto.SHA512, h512[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := rsaSigner.Sign(nil, tc.digest, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.verify(sig); err != nil {
				t.Fatalf("signature does not verify: %v", err)
			}
		})
	}
	t.Run("ecdsa p256", func(t *testing.T) {
		s, err := c.TransitSigner(t.Context(), TransitKeyConfig{Mount: mount, Key: "ec"})
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(nil, h256[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), h256[:], sig) {
			t.Fatal("ECDSA signature does not verify")
		}
	})
	t.Run("ed25519", func(t *testing.T) {
		s, err := c.TransitSigner(t.Context(), TransitKeyConfig{Mount: mount, Key: "ed"})
		if err != nil {
			t.Fatal(err)
		}
		sig, err := s.Sign(nil, msg, crypto.Hash(0))
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(s.Public().(ed25519.PublicKey), msg, sig) {
			t.Fatal("Ed25519 signature does not verify")
		}
		if _, err := s.Sign(nil, h512[:], crypto.SHA512); err == nil {
			t.Fatal("Ed25519ph accepted")
		}
	})
	t.Run("wrong digest length", func(t *testing.T) {
		if _, err := rsaSigner.Sign(nil, h256[:20], crypto.SHA256); err == nil || !strings.Contains(err.Error(), "digest is 20 bytes") {
			t.Fatalf("short digest: %v", err)
		}
	})
	t.Run("private key not exportable", func(t *testing.T) {
		_, err := srv.Client().Logical().Read(mount + "/export/signing-key/rsa")
		if err == nil || !strings.Contains(err.Error(), "not exportable") {
			t.Fatalf("export of the signing key: %v", err)
		}
		sec := srv.Read(mount + "/keys/rsa")
		if sec.Data["exportable"] != false {
			t.Fatalf("key exportable = %v", sec.Data["exportable"])
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for range 16 {
			wg.Go(func() {
				for range 8 {
					sig, err := rsaSigner.Sign(nil, h256[:], crypto.SHA256)
					if err == nil {
						err = rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, h256[:], sig)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
	t.Run("pinned across rotation", func(t *testing.T) {
		srv.Write(mount+"/keys/rsa/rotate", nil)
		sig, err := rsaSigner.Sign(nil, h256[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, h256[:], sig); err != nil {
			t.Fatalf("signer drifted to the rotated version: %v", err)
		}
		latest, err := c.TransitSigner(t.Context(), TransitKeyConfig{Mount: mount, Key: "rsa"})
		if err != nil || latest.KeyVersion() != 2 {
			t.Fatalf("latest signer: version %v, %v", latest, err)
		}
		byCert, err := c.TransitSignerFor(t.Context(), TransitKeyConfig{Mount: mount, Key: "rsa"}, rsaPub)
		if err != nil || byCert.KeyVersion() != 1 {
			t.Fatalf("signer for the first public key: %v, %v", byCert, err)
		}
		if _, err := c.TransitSignerFor(t.Context(), TransitKeyConfig{Mount: mount, Key: "ec"}, rsaPub); err == nil {
			t.Fatal("a foreign public key matched")
		}
	})
}

// TestTransitTLSClientKey uses a Transit key as the TLS client key: the
// certificate (public) is in KV, the private key never leaves Vault.
func TestTransitTLSClientKey(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := setupTransit(t, srv)
	kv := vaulttest.Unique("kv")
	srv.Mount(kv, "kv-v2")
	c := rootClient(t, srv)
	ca := newTestCA(t)

	for _, tc := range []struct {
		key    string
		maxTLS uint16
	}{{"rsa", tls.VersionTLS13}, {"rsa", tls.VersionTLS12}, {"ec", tls.VersionTLS13}, {"ed", tls.VersionTLS13}} {
		t.Run(tc.key+" "+tls.VersionName(tc.maxTLS), func(t *testing.T) {
			signer, err := c.TransitSigner(t.Context(), TransitKeyConfig{Mount: mount, Key: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			leaf := ca.issue(t, "transit-"+tc.key, 7000+int64(tc.maxTLS), signer.Public())
			srv.PutKV(kv, "qwac/"+tc.key, map[string]any{"certificate": pemCert(leaf) + pemCert(ca.cert)})
			src := c.TransitCertSource(TransitCertConfig{Key: TransitKeyConfig{Mount: mount, Key: tc.key}, Certificate: secret.VaultRef{Mount: kv, Path: "qwac/" + tc.key, Field: "certificate"}})
			log, _ := observed()
			holder := certs.NewHolder(nil)
			if err := (&certs.Reloader{Name: "transit", Holder: holder, Source: src, Log: log}).Load(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, ok := holder.Load().PrivateKey.(*TransitSigner); !ok {
				t.Fatalf("private key is %T", holder.Load().PrivateKey)
			}
			url, tlsFor := mtlsServer(t, ca.cert)
			cfg := tlsFor(holder.GetClientCertificate)
			cfg.MaxVersion = tc.maxTLS
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			resp, err := client.Get(url)
			if err != nil {
				t.Fatalf("mTLS with the Transit key: %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != leaf.SerialNumber.Text(16) {
				t.Fatalf("upstream saw serial %s", b)
			}
		})
	}
	t.Run("certificate for another key", func(t *testing.T) {
		other := newTestCA(t) // its key is not in Transit
		leaf := ca.issue(t, "stranger", 9, other.Signer().Public())
		_, err := c.TransitCertificate(t.Context(), TransitKeyConfig{Mount: mount, Key: "rsa"}, []byte(pemCert(leaf)))
		if err == nil || !strings.Contains(err.Error(), "no version's public key matches") {
			t.Fatalf("certificate for a foreign key: %v", err)
		}
		if _, err := c.TransitCertificate(t.Context(), TransitKeyConfig{Mount: mount, Key: "rsa"}, []byte("junk")); !errors.Is(err, certs.ErrNoCertificate) {
			t.Fatalf("junk certificate: %v", err)
		}
	})
}
