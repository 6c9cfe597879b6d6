package intercept

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// keySecrets returns forms of c's private key that must never be logged or
// written: the PEM body and the base64 of its DER in several encodings.
func keySecrets(t testing.TB, c *tls.Certificate) []string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{base64.StdEncoding.EncodeToString(der)[8:56]}
	if trad, err := pki.EncodeTraditionalKeyPEM(c); err == nil {
		b, _ := pem.Decode(trad)
		out = append(out, base64.StdEncoding.EncodeToString(b.Bytes)[8:56])
	}
	return out
}

// writeCA writes ca's certificate and key to dir with the key in the given form.
func writeCA(t testing.TB, dir string, ca *pki.CA, keyForm string) FileConfig {
	t.Helper()
	tc := ca.TLSCertificate()
	certPEM, keyPEM, err := pki.EncodePEM(tc)
	if err != nil {
		t.Fatal(err)
	}
	if keyForm == "traditional" {
		if keyPEM, err = pki.EncodeTraditionalKeyPEM(tc); err != nil {
			t.Fatal(err)
		}
	}
	cfg := FileConfig{CertFile: filepath.Join(dir, "ca.crt"), KeyFile: filepath.Join(dir, "ca.key")}
	if err := pki.WriteFileAtomic(cfg.CertFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(cfg.KeyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestFileCAKeyForms(t *testing.T) {
	tests := []struct {
		name    string
		keyType pki.KeyType
		keyForm string
	}{
		{"ECDSA PKCS#8", pki.ECDSAP256, "pkcs8"},
		{"ECDSA SEC 1", pki.ECDSAP256, "traditional"},
		{"RSA PKCS#8", pki.RSA2048, "pkcs8"},
		{"RSA PKCS#1", pki.RSA2048, "traditional"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			log, capture := testlog.New(t)
			root, err := pki.NewCA("Interception Root", pki.WithKeyType(tc.keyType))
			if err != nil {
				t.Fatal(err)
			}
			capture.ForbidStrings(keySecrets(t, root.TLSCertificate())...)
			ca := NewFileCA(writeCA(t, t.TempDir(), root, tc.keyForm), log, nil)
			if err := ca.Load(context.Background()); err != nil {
				t.Fatalf("Load: %v", err)
			}
			c, err := NewLeaves(ca, LeafConfig{}).Certificate(context.Background(), "bank.example", allowOnly("bank.example"))
			if err != nil {
				t.Fatal(err)
			}
			verifyLeaf(t, c, root.Certificate(), "bank.example")
		})
	}
}

func TestFileCAIntermediateChain(t *testing.T) {
	root, err := pki.NewCA("Interception Root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("Interception Intermediate")
	if err != nil {
		t.Fatal(err)
	}
	ca := NewFileCA(writeCA(t, t.TempDir(), inter, "pkcs8"), testlogger(t), nil)
	if err := ca.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, err := NewLeaves(ca, LeafConfig{}).Certificate(context.Background(), "bank.example", allowOnly("bank.example"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(c.Certificate))
	}
	verifyLeaf(t, c, root.Certificate(), "bank.example")
}

func TestFileCARotation(t *testing.T) {
	log, capture := testlog.New(t)
	dir := t.TempDir()
	first, _ := pki.NewCA("Interception Root 1")
	second, _ := pki.NewCA("Interception Root 2")
	capture.ForbidStrings(keySecrets(t, first.TLSCertificate())...)
	capture.ForbidStrings(keySecrets(t, second.TLSCertificate())...)
	cfg := writeCA(t, dir, first, "pkcs8")
	ca := NewFileCA(cfg, log, nil)
	if err := ca.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	leaves := NewLeaves(ca, LeafConfig{})
	allow := allowOnly("bank.example")
	get := func() *tls.Certificate {
		t.Helper()
		c, err := leaves.Certificate(context.Background(), "bank.example", allow)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	verifyLeaf(t, get(), first.Certificate(), "bank.example")

	// A bad rotation (a leaf certificate, not a CA) changes nothing.
	notCA, _ := first.IssueServer([]string{"ca.example"}, nil)
	certPEM, keyPEM, _ := pki.EncodePEM(notCA)
	_ = pki.WriteFileAtomic(cfg.CertFile, certPEM, 0o644)
	_ = pki.WriteFileAtomic(cfg.KeyFile, keyPEM, 0o600)
	gen := ca.Generation()
	if ok, err := ca.Poll(context.Background()); ok || !errors.Is(err, errNotCA) {
		t.Fatalf("Poll with a non-CA certificate = %v, %v; want errNotCA", ok, err)
	}
	if ca.Generation() != gen {
		t.Fatal("a refused rotation changed the generation")
	}
	verifyLeaf(t, get(), first.Certificate(), "bank.example")
	if capture.Count("certificate reload failed") != 1 {
		t.Fatalf("want one log line for the bad rotation, log:\n%s", capture.String())
	}

	writeCA(t, dir, second, "traditional")
	if ok, err := ca.Poll(context.Background()); !ok || err != nil {
		t.Fatalf("Poll after rotation = %v, %v", ok, err)
	}
	verifyLeaf(t, get(), second.Certificate(), "bank.example")
}

func TestGeneratedCAWritesOnlyTheCertificate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shared", "ca.crt")
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	ca := mustGenerate(t, GenerateConfig{WriteCertTo: path, Hosts: []string{"bank.example"}})
	key := &tls.Certificate{PrivateKey: ca.cur.Load().key}
	secrets := keySecrets(t, key)
	if err := ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, keySecrets(t, &tls.Certificate{PrivateKey: ca.cur.Load().key})...)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ca.CertPEM()) {
		t.Fatal("the written file is not the current CA certificate")
	}
	if b, rest := pem.Decode(got); b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("the written file holds more than one certificate: %q", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	// No file anywhere under the directory holds the key.
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p) //nolint:gosec // G122: the test's own temporary directory
		if err != nil {
			return err
		}
		if strings.Contains(string(data), "PRIVATE KEY") {
			t.Errorf("%s holds a private key", p)
		}
		for _, s := range secrets {
			if strings.Contains(string(data), s) {
				t.Errorf("%s holds the CA key", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGeneratedCANameConstraints(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{Hosts: []string{"bank.example", "127.0.0.1"}})
	tests := []struct {
		host string
		ok   bool
	}{
		{"bank.example", true},
		{"api.bank.example", true},
		{"127.0.0.1", true},
		{"evil.example", false},
		{"10.0.0.1", false},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			// Sign directly, as if the allow check were bypassed: the app still refuses it.
			c, err := NewLeaves(ca, LeafConfig{}).Certificate(context.Background(), tc.host, func(string) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca.Certificate())
			_, err = c.Leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: pool})
			if (err == nil) != tc.ok {
				t.Fatalf("verify %s: %v, want ok=%v", tc.host, err, tc.ok)
			}
		})
	}
}
