// Package emutest has what the emulator tests share: a small PKI (CA, QWAC for mTLS, QSealC for signing)
// and an mTLS test server on 127.0.0.1.
package emutest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// PKI is a test CA with the TPP's certificates.
type PKI struct {
	CA     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	Roots  *x509.CertPool
	Server tls.Certificate // for 127.0.0.1
	QWAC   tls.Certificate // TLS client certificate
	QSealC *tls.Certificate
	// OtherQSealC has a different RSA key and serial.
	OtherQSealC *tls.Certificate
}

var (
	once   sync.Once
	shared *PKI
	errPKI error
)

// NewPKI returns a PKI made once per test binary (RSA key generation is slow).
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	once.Do(func() { shared, errPKI = build() })
	if errPKI != nil {
		t.Fatalf("test PKI: %v", errPKI)
	}
	return shared
}

func build() (*PKI, error) {
	p := &PKI{}
	var err error
	if p.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1),
		Subject:   pkix.Name{Country: []string{"NO"}, Locality: []string{"Trondheim"}, Organization: []string{"PSDNO-FSA-ABCA"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, p.caKey.Public(), p.caKey)
	if err != nil {
		return nil, err
	}
	if p.CA, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(p.CA)

	leaf := func(serial int64, key any, pub any, tmpl x509.Certificate) (*tls.Certificate, error) {
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, p.CA, pub, p.caKey)
		if err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, nil
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srv, err := leaf(2, ecKey, ecKey.Public(), x509.Certificate{Subject: pkix.Name{CommonName: "bank.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, err
	}
	p.Server = *srv
	qwac, err := leaf(3, ecKey, ecKey.Public(), x509.Certificate{Subject: pkix.Name{CommonName: "tpp.example QWAC"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	p.QWAC = *qwac
	for i, dst := range []**tls.Certificate{&p.QSealC, &p.OtherQSealC} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		serial := int64(0x6AEB4444FBAAD267) + int64(i)
		if *dst, err = leaf(serial, k, k.Public(), x509.Certificate{
			Subject:  pkix.Name{Country: []string{"NO"}, Organization: []string{"Example TPP AS"}, CommonName: "tpp.example QSealC"},
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment}); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// StartMTLS serves h over TLS on 127.0.0.1, requiring a client certificate from the PKI's CA, and returns
// the server and a client that presents the QWAC.
func StartMTLS(t testing.TB, p *PKI, h http.Handler) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.Server}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: p.Roots, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.Roots, Certificates: []tls.Certificate{p.QWAC}, MinVersion: tls.VersionTLS12},
	}}
	t.Cleanup(client.CloseIdleConnections)
	return srv, client
}
