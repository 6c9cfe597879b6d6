package vaultsrc

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"net/http"
	"testing"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// TestTransitOnboarding walks the QWAC/QSealC onboarding: Transit makes the
// CSR with a key that never leaves Vault, the CA (the test's) issues the
// certificate, the chain is imported into Transit, and the certificate source
// serves it without any KV secret. A key rotation is followed only once the
// new version has its own certificate.
func TestTransitOnboarding(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := setupTransit(t, srv)
	c := rootClient(t, srv)
	ca := newTestCA(t)
	key := TransitKeyConfig{Mount: mount, Key: "rsa"}

	onboard := func(version int, serial int64) *x509.Certificate {
		t.Helper()
		csrPEM, err := c.TransitCSR(t.Context(), key, version, &x509.CertificateRequest{
			Subject:  pkix.Name{CommonName: "Example TPP QSealC", Organization: []string{"Example TPP"}, Country: []string{"FR"}},
			DNSNames: []string{"tpp.example"},
		})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(csrPEM)
		csr, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("CSR signature: %v", err)
		}
		if csr.Subject.CommonName != "Example TPP QSealC" || len(csr.DNSNames) != 1 {
			t.Fatalf("CSR subject %s, names %v", csr.Subject, csr.DNSNames)
		}
		leaf := ca.issue(t, csr.Subject.CommonName, serial, csr.PublicKey)
		if err := c.TransitSetCertificateChain(t.Context(), key, version, []byte(pemCert(leaf)+pemCert(ca.cert))); err != nil {
			t.Fatal(err)
		}
		return leaf
	}

	src := c.TransitCertSource(TransitCertConfig{Key: key})
	if _, _, err := src.Fetch(t.Context(), ""); err == nil {
		t.Fatal("a key without a certificate chain was served")
	}
	leaf1 := onboard(0, 0x71)
	log, _ := observed()
	holder := certs.NewHolder(nil)
	r := &certs.Reloader{Name: "qseal", Holder: holder, Source: src, Log: log}
	if err := r.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	url, tlsFor := mtlsServer(t, ca.cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsFor(holder.GetClientCertificate), DisableKeepAlives: true}}
	get := func() string {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if s := get(); s != leaf1.SerialNumber.Text(16) {
		t.Fatalf("upstream saw %s", s)
	}

	// Rotation in Vault: version 2 has no certificate yet, so version 1 keeps serving.
	srv.Write(mount+"/keys/rsa/rotate", nil)
	if changed, err := r.Poll(t.Context()); changed || err != nil {
		t.Fatalf("poll after a bare rotation: %v, %v", changed, err)
	}
	leaf2 := onboard(2, 0x72)
	if changed, err := r.Poll(t.Context()); !changed || err != nil {
		t.Fatalf("poll after onboarding version 2: %v, %v", changed, err)
	}
	if got := holder.Load().PrivateKey.(*TransitSigner).KeyVersion(); got != 2 {
		t.Fatalf("signer version %d", got)
	}
	if s := get(); s != leaf2.SerialNumber.Text(16) {
		t.Fatalf("upstream saw %s after the rotation", s)
	}

	// Vault refuses a chain whose leaf is not the key's.
	other := newTestCA(t)
	if err := c.TransitSetCertificateChain(t.Context(), key, 2, []byte(pemCert(ca.issue(t, "x", 9, other.Signer().Public())))); err == nil {
		t.Fatal("a certificate for another key was imported")
	}
}
