package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

func mustCA(t *testing.T, cn string, opts ...Option) *CA {
	t.Helper()
	ca, err := NewCA(cn, opts...)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", cn, err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []Option
		wantRSA bool
	}{
		{name: "default ECDSA"},
		{name: "RSA", opts: []Option{WithKeyType(RSA2048)}, wantRSA: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := mustCA(t, "Test Root", tc.opts...)
			c := ca.Certificate()
			if !c.IsCA || c.Subject.CommonName != "Test Root" {
				t.Fatalf("certificate: IsCA=%v CN=%q", c.IsCA, c.Subject.CommonName)
			}
			if _, isRSA := ca.Signer().(*rsa.PrivateKey); isRSA != tc.wantRSA {
				t.Fatalf("key type %T, want RSA=%v", ca.Signer(), tc.wantRSA)
			}
			block, _ := pem.Decode(ca.CertPEM())
			if block == nil || block.Type != "CERTIFICATE" {
				t.Fatalf("CertPEM is not a PEM certificate")
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: ca.CertPool()}); err != nil {
				t.Fatalf("root does not verify against its own pool: %v", err)
			}
		})
	}
}

func TestIssue(t *testing.T) {
	ca := mustCA(t, "Root")
	ica, err := ca.NewIntermediate("Issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-48 * time.Hour)
	for _, tc := range []struct {
		name      string
		issue     func() (*tls.Certificate, error)
		usage     x509.ExtKeyUsage
		chainLen  int
		wantCN    string
		verifyErr bool
		check     func(t *testing.T, c *tls.Certificate)
	}{
		{
			name: "server",
			issue: func() (*tls.Certificate, error) {
				return ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
			},
			usage:    x509.ExtKeyUsageServerAuth,
			chainLen: 1,
			wantCN:   "localhost",
			check: func(t *testing.T, c *tls.Certificate) {
				if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:     "client RSA",
			issue:    func() (*tls.Certificate, error) { return ca.IssueClient("m2m", WithKeyType(RSA2048)) },
			usage:    x509.ExtKeyUsageClientAuth,
			chainLen: 1,
			wantCN:   "m2m",
			check: func(t *testing.T, c *tls.Certificate) {
				if _, ok := c.PrivateKey.(*rsa.PrivateKey); !ok {
					t.Fatalf("key %T, want RSA", c.PrivateKey)
				}
			},
		},
		{
			name:     "client via intermediate option",
			issue:    func() (*tls.Certificate, error) { return ca.IssueClient("m2m", WithIntermediate(ica)) },
			usage:    x509.ExtKeyUsageClientAuth,
			chainLen: 2,
			wantCN:   "m2m",
		},
		{
			name:     "server from intermediate",
			issue:    func() (*tls.Certificate, error) { return ica.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)}) },
			usage:    x509.ExtKeyUsageServerAuth,
			chainLen: 2,
			wantCN:   "127.0.0.1",
		},
		{
			name: "expired",
			issue: func() (*tls.Certificate, error) {
				return ca.IssueClient("old", WithValidity(past, past.Add(time.Hour)))
			},
			usage:     x509.ExtKeyUsageClientAuth,
			chainLen:  1,
			wantCN:    "old",
			verifyErr: true,
		},
		{
			name: "serial and subject",
			issue: func() (*tls.Certificate, error) {
				return ca.IssueClient("qseal", WithSerialNumber(big.NewInt(0x1234)),
					WithSubject(pkix.Name{Organization: []string{"Test TPP"}, Country: []string{"DK"}}))
			},
			usage:    x509.ExtKeyUsageClientAuth,
			chainLen: 1,
			wantCN:   "qseal",
			check: func(t *testing.T, c *tls.Certificate) {
				if c.Leaf.SerialNumber.Int64() != 0x1234 || c.Leaf.Subject.Organization[0] != "Test TPP" {
					t.Fatalf("serial %v subject %v", c.Leaf.SerialNumber, c.Leaf.Subject)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.issue()
			if err != nil {
				t.Fatalf("issue: %v", err)
			}
			if c.Leaf == nil || len(c.Certificate) != tc.chainLen {
				t.Fatalf("Leaf=%v chain length %d, want %d", c.Leaf != nil, len(c.Certificate), tc.chainLen)
			}
			if c.Leaf.Subject.CommonName != tc.wantCN {
				t.Fatalf("CN %q, want %q", c.Leaf.Subject.CommonName, tc.wantCN)
			}
			chain, err := Chain(c)
			if err != nil {
				t.Fatal(err)
			}
			inter := x509.NewCertPool()
			for _, ic := range chain[1:] {
				inter.AddCert(ic)
			}
			_, err = c.Leaf.Verify(x509.VerifyOptions{
				Roots: ca.CertPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{tc.usage},
			})
			if (err != nil) != tc.verifyErr {
				t.Fatalf("Verify error %v, want error=%v", err, tc.verifyErr)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestIssueErrors(t *testing.T) {
	ca := mustCA(t, "Root")
	other := mustCA(t, "Other")
	oi, err := other.NewIntermediate("Other Issuing")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name  string
		issue func() error
	}{
		{"server without names", func() error { _, err := ca.IssueServer(nil, nil); return err }},
		{"foreign intermediate", func() error { _, err := ca.IssueClient("x", WithIntermediate(oi)); return err }},
		{"inverted validity", func() error { _, err := ca.IssueClient("x", WithValidity(now, now.Add(-time.Hour))); return err }},
		{"unknown key type", func() error { _, err := ca.IssueClient("x", WithKeyType(KeyType(9))); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.issue(); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestPFXRoundTrip(t *testing.T) {
	ca := mustCA(t, "Root")
	ica, err := ca.NewIntermediate("Issuing")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		key    KeyType
		encode func(*tls.Certificate, string) ([]byte, error)
	}{
		{"modern ECDSA", ECDSAP256, EncodePFX},
		{"legacy RC2 ECDSA", ECDSAP256, EncodeLegacyPFX},
		{"legacy RC2 RSA", RSA2048, EncodeLegacyPFX},
		{"legacy DES", ECDSAP256, func(c *tls.Certificate, p string) ([]byte, error) {
			return EncodePFXWith(pkcs12.LegacyDES, c, p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ica.IssueClient("m2m", WithKeyType(tc.key))
			if err != nil {
				t.Fatal(err)
			}
			pfx, err := tc.encode(c, "s3cret")
			if err != nil {
				t.Fatal(err)
			}
			key, leaf, cas, err := pkcs12.DecodeChain(pfx, "s3cret")
			if err != nil {
				t.Fatalf("DecodeChain: %v", err)
			}
			if !leaf.Equal(c.Leaf) || len(cas) != 1 || !cas[0].Equal(ica.Certificate()) {
				t.Fatalf("decoded leaf/chain differ")
			}
			switch k := key.(type) {
			case *rsa.PrivateKey:
				if !k.Equal(c.PrivateKey) {
					t.Fatal("RSA key differs")
				}
			case *ecdsa.PrivateKey:
				if !k.Equal(c.PrivateKey) {
					t.Fatal("ECDSA key differs")
				}
			default:
				t.Fatalf("key type %T", key)
			}
			if _, _, _, err := pkcs12.DecodeChain(pfx, "wrong"); err == nil {
				t.Fatal("wrong passcode decoded")
			}
		})
	}
}

func TestPEMAndFiles(t *testing.T) {
	ca := mustCA(t, "Root")
	ica, err := ca.NewIntermediate("Issuing")
	if err != nil {
		t.Fatal(err)
	}
	for _, kt := range []KeyType{ECDSAP256, RSA2048} {
		t.Run(kt.String(), func(t *testing.T) {
			c, err := ica.IssueClient("m2m", WithKeyType(kt))
			if err != nil {
				t.Fatal(err)
			}
			certPEM, keyPEM, err := EncodePEM(c)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(certPEM), "BEGIN CERTIFICATE"); n != 2 {
				t.Fatalf("%d certificates in PEM, want 2", n)
			}
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				t.Fatalf("PKCS#8 pair: %v", err)
			}
			trad, err := EncodeTraditionalKeyPEM(c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.X509KeyPair(certPEM, trad); err != nil {
				t.Fatalf("traditional pair: %v", err)
			}

			dir := t.TempDir()
			f, err := WriteFiles(dir, "client", c, "pw")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
				t.Fatal(err)
			}
			pfx, err := os.ReadFile(f.PFX)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, _, err := pkcs12.DecodeChain(pfx, "pw"); err != nil { // Decode rejects a PFX with a chain
				t.Fatal(err)
			}
			st, err := os.Stat(f.Key)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode %v (%v), want 0600", st.Mode(), err)
			}
			caFile := filepath.Join(dir, "ca.crt")
			if err := ca.WriteCertFile(caFile); err != nil {
				t.Fatal(err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 4 {
				t.Fatalf("%d files in dir, want 4 (no temporary files left)", len(entries))
			}
		})
	}
}

// TestMutualTLS proves the pieces fit together: a stock server requiring a
// client certificate and a stock client, both built from one CA.
func TestMutualTLS(t *testing.T) {
	ca := mustCA(t, "Root")
	srvCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ica, err := ca.NewIntermediate("Client Issuing")
	if err != nil {
		t.Fatal(err)
	}
	cliCert, err := ica.IssueClient("m2m")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName+" "+Fingerprint(r.TLS.PeerCertificates[0]))
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{*srvCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.CertPool(),
	}
	srv.StartTLS()
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      ca.CertPool(),
		Certificates: []tls.Certificate{*cliCert},
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := "m2m " + Fingerprint(cliCert.Leaf); string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestTLSCertificateOfCA(t *testing.T) {
	ca := mustCA(t, "Root")
	ica, err := ca.NewIntermediate("Issuing")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(ca.TLSCertificate().Certificate); got != 1 {
		t.Fatalf("root chain %d, want 1", got)
	}
	tc := ica.TLSCertificate()
	if len(tc.Certificate) != 1 || tc.Leaf != ica.Certificate() || ica.Root() != ca {
		t.Fatalf("intermediate TLSCertificate chain %d", len(tc.Certificate))
	}
}

func BenchmarkIssueClient(b *testing.B) {
	ca, err := NewCA("Root")
	if err != nil {
		b.Fatal(err)
	}
	for _, kt := range []KeyType{ECDSAP256, RSA2048} {
		b.Run(kt.String(), func(b *testing.B) {
			for b.Loop() {
				if _, err := ca.IssueClient("m2m", WithKeyType(kt)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestCertifyKey(t *testing.T) {
	ca, err := NewCA("root")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subject := pkix.Name{Country: []string{"DK"}, Organization: []string{"Acme"}}
	cert, err := ca.CertifyKey("held elsewhere", key.Public(), WithSubject(subject), WithSerialNumber(big.NewInt(42)))
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != "held elsewhere" ||
		cert.Subject.Organization[0] != "Acme" || cert.SerialNumber.Int64() != 42 {
		t.Fatalf("certificate %v for %T", cert.Subject, cert.PublicKey)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("does not verify as a client certificate: %v", err)
	}
}
