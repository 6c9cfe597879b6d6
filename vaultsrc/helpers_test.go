package vaultsrc

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
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

// testCA is a local CA for client certificates, including certificates
// whose keys live elsewhere (Transit).
type testCA struct {
	*pki.CA
	cert *x509.Certificate
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := pki.NewCA("tokenproxy test CA")
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{CA: ca, cert: ca.Certificate()}
}

// issue signs a client certificate for pub.
func (ca *testCA) issue(t *testing.T, cn string, serial int64, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	c, err := ca.CertifyKey(cn, pub, pki.WithSerialNumber(big.NewInt(serial)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// clientPFX makes a client certificate and key signed by ca, as base64 PKCS#12 and as PEM.
func (ca *testCA) clientPFX(t *testing.T, cn string, serial int64, passcode string) (pfxB64, certPEM, keyPEM string, leaf *x509.Certificate) {
	t.Helper()
	c, err := ca.IssueClient(cn, pki.WithSerialNumber(big.NewInt(serial)))
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := pki.EncodePFX(c, passcode)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := pki.EncodePEM(c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pfx), string(cp), string(kp), c.Leaf
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
