package intercept

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// clockSkew backdates a leaf's NotBefore so that an app whose clock is a
// little behind still accepts it.
const clockSkew = time.Minute

// localCA is CA material held in this process: a certificate and its key.
type localCA struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain [][]byte // sent after the leaf: the CA and its parents, roots left out
}

func newLocalCA(certs [][]byte, leaf *x509.Certificate, key crypto.Signer) *localCA {
	l := &localCA{cert: leaf, key: key}
	for _, der := range certs {
		c, err := x509.ParseCertificate(der)
		if err != nil || bytes.Equal(c.RawIssuer, c.RawSubject) {
			continue // a root is what the app trusts; it is not sent
		}
		l.chain = append(l.chain, der)
	}
	return l
}

// sign issues a leaf for host over pub, valid for ttl from now and never
// beyond the CA's own NotAfter.
func (l *localCA) sign(host string, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([][]byte, error) {
	tmpl, err := leafTemplate(host, now, ttl)
	if err != nil {
		return nil, err
	}
	if tmpl.NotAfter.After(l.cert.NotAfter) {
		tmpl.NotAfter = l.cert.NotAfter
	}
	if !now.Before(l.cert.NotAfter) {
		return nil, fmt.Errorf("the interception CA %q expired on %s", l.cert.Subject, l.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, l.cert, pub, l.key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate for %q: %w", host, err)
	}
	return append([][]byte{der}, l.chain...), nil
}

// leafTemplate is a TLS server certificate for host only.
func leafTemplate(host string, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(host) > 64 {
		t.Subject.CommonName = "" // the SAN names the host; CN is limited to 64 characters
	}
	if ip := net.ParseIP(host); ip != nil {
		t.IPAddresses = []net.IP{ip}
	} else {
		t.DNSNames = []string{host}
	}
	return t, nil
}

// NormalizeHost returns host (which may carry a port and IPv6 brackets) in
// the form Allow receives: lower case, no port, no trailing dot; an IP
// address in its canonical text. It refuses wildcards and anything that is
// not a DNS name or an IP literal.
func NormalizeHost(hostport string) (string, error) {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if !validDNSName(host) {
		return "", &RefusedError{Reason: ReasonBadHost, Host: hostport}
	}
	return host, nil
}

// validDNSName accepts letters, digits, '-' and '_' in labels of 1 to 63
// characters, 253 characters in all.
func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
