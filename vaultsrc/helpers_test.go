package vaultsrc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/tokenproxy/tokenproxy/internal/vaulttest"
)

// writeFile writes content to a new file in the test's temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// assertNotLogged fails if any log message or field contains one of the secrets.
func assertNotLogged(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		text := e.Message
		for k, v := range e.ContextMap() {
			text += " " + k + "=" + toString(v)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Fatalf("a secret appears in the log line %q", text)
			}
		}
	}
}

func toString(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	return fmt.Sprint(v)
}

// rootClient is a Client logged in with the server's root token (token auth from a file).
func rootClient(t *testing.T, srv *vaulttest.Server, opts ...Option) *Client {
	t.Helper()
	cfg := Config{
		Address: srv.Addr,
		Timeout: 5 * time.Second,
		Auth:    AuthConfig{Method: MethodToken, Token: &TokenAuth{File: writeFile(t, "token", srv.Token+"\n")}},
	}
	c, err := New(t.Context(), cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testCA is a local CA for certificates whose keys live elsewhere.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tokenproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue signs a client certificate for pub.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// clientPFX makes a client certificate and key signed by ca, as base64 PKCS#12 and as PEM.
func (ca *testCA) clientPFX(t *testing.T, cn string, serial int64, passcode string) (pfxB64, certPEM, keyPEM string, leaf *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf = ca.issue(t, cn, serial, key.Public())
	pfx, err := pkcs12.Modern.Encode(key, leaf, []*x509.Certificate{ca.cert}, passcode)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return base64.StdEncoding.EncodeToString(pfx), pemCert(leaf), keyPEM, leaf
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mtlsServer is an HTTPS server that requires a client certificate from ca
// and answers with the serial of the certificate it got.
func mtlsServer(t *testing.T, ca *x509.Certificate) (url string, client func(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := newTLSServer(t, &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	return srv.URL, func(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
		roots := x509.NewCertPool()
		roots.AddCert(srv.Certificate())
		return &tls.Config{RootCAs: roots, GetClientCertificate: getCert}
	}
}

// contextWithCancel derives a cancellable context from the test's.
func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}

func writeFileRaw(p, content string) error { return os.WriteFile(p, []byte(content), 0o600) }
