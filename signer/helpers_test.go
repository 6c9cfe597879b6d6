package signer

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// readArchive reads a txtar-style file: a comment, then "-- name --" sections.
func readArchive(t testing.TB, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	files := map[string]string{}
	var name string
	var b strings.Builder
	flush := func() {
		if name != "" {
			files[name] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if l := strings.TrimRight(line, "\n"); strings.HasPrefix(l, "-- ") && strings.HasSuffix(l, " --") {
			flush()
			name = strings.TrimSuffix(strings.TrimPrefix(l, "-- "), " --")
			continue
		}
		b.WriteString(line)
	}
	flush()
	return files
}

// one returns a section without its final newline.
func one(t testing.TB, files map[string]string, name string) string {
	t.Helper()
	v, ok := files[name]
	if !ok {
		t.Fatalf("testdata section %q missing", name)
	}
	return strings.TrimSuffix(v, "\n")
}

func parsePrivateKey(t testing.TB, pemText string) crypto.Signer {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		t.Fatal("no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		t.Fatalf("parsing %s: %v", blk.Type, err)
	}
	return k.(crypto.Signer)
}

func parsePublicKey(t testing.TB, pemText string) crypto.PublicKey {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		t.Fatal("no PEM block")
	}
	if blk.Type == "RSA PUBLIC KEY" {
		k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// readRequest parses an HTTP/1.1 request from testdata and returns it with its body.
func readRequest(t testing.TB, text string) (*http.Request, []byte) {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(text)))
	if err != nil {
		t.Fatalf("parsing request: %v", err)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		t.Fatal(err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.RequestURI = ""
	return req, body
}

func fixedClock(unix int64) func() time.Time {
	return func() time.Time { return time.Unix(unix, 0) }
}

// testPKI is a CA and signing certificates made once per test binary.
type testPKI struct {
	ca         *pki.CA
	rsa        *tls.Certificate // RSA-2048 QSealC-like certificate, serial 6AEB4444FBAAD267
	rsaOther   *tls.Certificate // RSA-2048 with a non-ASCII issuer DN
	ecdsa      *tls.Certificate
	ed25519    *tls.Certificate
	expired    *tls.Certificate
	rsaNoCert  *tls.Certificate
	otherRSA   *rsa.PrivateKey
	nonASCIICA *pki.CA
}

var (
	pkiOnce   sync.Once
	sharedPKI *testPKI
)

var oidOrganizationIdentifier = asn1.ObjectIdentifier{2, 5, 4, 97}

func getPKI(t testing.TB) *testPKI {
	t.Helper()
	pkiOnce.Do(func() { sharedPKI = newTestPKI(t) })
	if sharedPKI == nil {
		t.Fatal("test PKI setup failed")
	}
	return sharedPKI
}

func newTestPKI(t testing.TB) *testPKI {
	p := &testPKI{}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	now := time.Now()
	// CAs without a common name: the issuer DN appears in key IDs as the profiles print it.
	caName := pkix.Name{Country: []string{"NO"}, Locality: []string{"Trondheim"}, Organization: []string{"PSDNO-FSA-ABCA"}}
	p.ca, err = pki.NewCA("", pki.WithSubject(caName), pki.WithSerialNumber(big.NewInt(1)))
	must(err)
	ca2Name := pkix.Name{Country: []string{"NO"}, Locality: []string{"Ålesund"}, Organization: []string{"Bank Ø Test CA"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidOrganizationIdentifier, Value: "PSDNO-FSA-ABCA"}}}
	p.nonASCIICA, err = pki.NewCA("", pki.WithSubject(ca2Name), pki.WithSerialNumber(big.NewInt(2)))
	must(err)

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	p.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	must(err)

	serial, _ := new(big.Int).SetString("6AEB4444FBAAD267", 16)
	p.rsa = issue(t, p.ca, rsaKey, serial, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	p.rsaOther = issue(t, p.nonASCIICA, rsaKey, big.NewInt(0x0a0b), now.Add(-time.Hour), now.Add(365*24*time.Hour))
	p.ecdsa = issue(t, p.ca, ecKey, big.NewInt(7), now.Add(-time.Hour), now.Add(365*24*time.Hour))
	p.ed25519 = issue(t, p.ca, edKey, big.NewInt(8), now.Add(-time.Hour), now.Add(365*24*time.Hour))
	p.expired = issue(t, p.ca, rsaKey, big.NewInt(9), now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	p.rsaNoCert = &tls.Certificate{PrivateKey: rsaKey}
	return p
}

// issue makes a QSealC-like certificate for key, issued by ca; serial nil draws one at random.
func issue(t testing.TB, ca *pki.CA, key crypto.Signer, serial *big.Int, nb, na time.Time) *tls.Certificate {
	opts := []pki.Option{pki.WithValidity(nb, na),
		pki.WithSubject(pkix.Name{Country: []string{"NO"}, Organization: []string{"Example TPP AS"}})}
	if serial != nil {
		opts = append(opts, pki.WithSerialNumber(serial))
	}
	leaf, err := ca.CertifyKey("tpp.example", key.Public(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// swapKey is a KeySource whose key can be replaced, like the rotation holder.
type swapKey struct{ p atomicCert }

type atomicCert struct {
	mu sync.Mutex
	c  *tls.Certificate
}

func (k *swapKey) Load() *tls.Certificate   { k.p.mu.Lock(); defer k.p.mu.Unlock(); return k.p.c }
func (k *swapKey) Store(c *tls.Certificate) { k.p.mu.Lock(); k.p.c = c; k.p.mu.Unlock() }

func sha512Sum(b []byte) []byte { s := sha512.Sum512(b); return s[:] }
