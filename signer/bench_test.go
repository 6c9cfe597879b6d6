package signer

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// fixedSigner returns a constant RSA-2048-sized signature: with it, Sign measures everything but the
// signature (digest, signing string, headers).
type fixedSigner struct{ pub crypto.PublicKey }

func (f fixedSigner) Public() crypto.PublicKey { return f.pub }
func (f fixedSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return benchSig[:], nil
}

var benchSig [256]byte

var benchBody = bytes.Repeat([]byte(`{"instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorName":"Merchant"}`), 12) // ~1 KiB

func benchRequest() *http.Request {
	u, _ := url.Parse("/v1/payments/sepa-credit-transfers")
	return &http.Request{Method: http.MethodPost, URL: u, Host: "api.bank.example", Header: http.Header{
		"Content-Type": {"application/json"}, "Psu-Id": {"PSU-1234"}, "Tpp-Redirect-Uri": {"https://tpp.example/cb"},
		"Authorization": {"Bearer abc"},
	}}
}

func benchSign(b *testing.B, opts Options, key *tls.Certificate) {
	s, err := New(opts, StaticKey{key})
	if err != nil {
		b.Fatal(err)
	}
	req := benchRequest()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		delete(req.Header, "Date")
		delete(req.Header, "X-Request-Id")
		if err := s.Sign(req, benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignRSA2048 is a full berlin-group Sign of a 1 KiB POST with an RSA-2048 key (rsa-sha256).
func BenchmarkSignRSA2048(b *testing.B) {
	benchSign(b, Options{Profile: ProfileBerlinGroup}, getPKI(b).rsa)
}

// BenchmarkSignRSA2048Parallel is the same on all cores.
func BenchmarkSignRSA2048Parallel(b *testing.B) {
	s, err := New(Options{Profile: ProfileBerlinGroup}, StaticKey{getPKI(b).rsa})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest()
		for pb.Next() {
			delete(req.Header, "Date")
			delete(req.Header, "X-Request-Id")
			if err := s.Sign(req, benchBody); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignBareRSA2048 is rsa.SignPKCS1v15 of a SHA-256 digest alone: the floor for BenchmarkSignRSA2048.
func BenchmarkSignBareRSA2048(b *testing.B) {
	key := getPKI(b).rsa.PrivateKey.(*rsa.PrivateKey)
	d := sha256.Sum256(benchBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignOverhead is Sign without the signature: digest, Date, X-Request-ID, signing string, headers.
func BenchmarkSignOverhead(b *testing.B) {
	p := getPKI(b)
	key := &tls.Certificate{Certificate: p.rsa.Certificate, Leaf: p.rsa.Leaf, PrivateKey: fixedSigner{p.rsa.Leaf.PublicKey}}
	b.Run("berlin-group", func(b *testing.B) { benchSign(b, Options{Profile: ProfileBerlinGroup}, key) })
	b.Run("stet", func(b *testing.B) {
		benchSign(b, Options{Profile: ProfileSTET, KeyID: "https://tpp.example/qsealc.pem"}, key)
	})
	b.Run("rfc9421", func(b *testing.B) {
		benchSign(b, Options{Profile: ProfileRFC9421, KeyID: "k", Algorithm: "rsa-v1_5-sha256"}, key)
	})
}
