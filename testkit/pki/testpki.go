// Package pki makes certificate authorities and certificates in memory for
// tests, benchmarks and the demo (cmd/tokenproxy-demo).
//
// Keys are ECDSA P-256 by default because they are generated in microseconds;
// pass WithKeyType(RSA2048) for the RSA keys banks actually issue. Nothing here
// is meant for production: keys are never protected and validity windows are
// short.
//
//	ca, _ := pki.NewCA("Test Bank Root")
//	srv, _ := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
//	cli, _ := ca.IssueClient("m2m-user", pki.WithKeyType(pki.RSA2048))
//	pfx, _ := pki.EncodePFX(cli, "passcode")
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// KeyType selects the algorithm of a generated key.
type KeyType int

const (
	// ECDSAP256 is an ECDSA key on curve P-256: fast to generate, the default.
	ECDSAP256 KeyType = iota
	// RSA2048 is a 2048-bit RSA key, what banks issue in their PFX files.
	RSA2048
)

// String returns "ECDSA-P256" or "RSA-2048".
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ECDSA-P256"
	case RSA2048:
		return "RSA-2048"
	default:
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
}

// Default validity windows, measured from the time of issue. NotBefore is
// backdated by an hour so that small clock differences never matter.
const (
	DefaultCAValidity   = 365 * 24 * time.Hour
	DefaultLeafValidity = 24 * time.Hour
	backdate            = time.Hour
)

// Option changes how a CA or a certificate is made.
type Option func(*options)

type options struct {
	keyType      KeyType
	notBefore    time.Time
	notAfter     time.Time
	serial       *big.Int
	subject      *pkix.Name
	extKeyUsage  []x509.ExtKeyUsage
	intermediate *CA
}

// WithKeyType selects the key algorithm (default ECDSAP256).
func WithKeyType(k KeyType) Option { return func(o *options) { o.keyType = k } }

// WithValidity sets the validity window. A window in the past makes an expired
// certificate; one in the future makes a certificate that is not yet valid.
func WithValidity(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// WithSerialNumber sets the serial number (default: 128 random bits).
func WithSerialNumber(serial *big.Int) Option {
	return func(o *options) { o.serial = new(big.Int).Set(serial) }
}

// WithSubject replaces the subject name. An empty CommonName in name is filled
// with the common name given to NewCA, NewIntermediate or IssueClient, or with
// the first DNS name or IP given to IssueServer.
func WithSubject(name pkix.Name) Option { return func(o *options) { n := name; o.subject = &n } }

// WithExtKeyUsage replaces the extended key usages of a leaf (default
// ServerAuth for IssueServer, ClientAuth for IssueClient). Useful for making a
// certificate the peer must reject.
func WithExtKeyUsage(usages ...x509.ExtKeyUsage) Option {
	return func(o *options) { o.extKeyUsage = append([]x509.ExtKeyUsage(nil), usages...) }
}

// WithIntermediate issues the certificate from ica, an intermediate made with
// NewIntermediate from the receiving CA (directly or further down), instead of
// from the receiving CA itself. The returned chain then includes ica and every
// intermediate above it. It is the same as calling ica.IssueClient or
// ica.IssueServer directly.
func WithIntermediate(ica *CA) Option { return func(o *options) { o.intermediate = ica } }

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// CA is a certificate authority held in memory: a root made by NewCA or an
// intermediate made by NewIntermediate. It is safe for concurrent use.
type CA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	parent *CA // nil for a root
}

// NewCA makes a self-signed root CA. Options: WithKeyType, WithValidity,
// WithSerialNumber, WithSubject.
func NewCA(commonName string, opts ...Option) (*CA, error) {
	o := buildOptions(opts)
	return newCA(nil, commonName, o)
}

// NewIntermediate makes an intermediate CA signed by ca. Certificates issued by
// the intermediate carry the intermediate (and any above it) in their chain,
// and verify against the root's CertPool.
func (ca *CA) NewIntermediate(commonName string, opts ...Option) (*CA, error) {
	o := buildOptions(opts)
	return newCA(ca, commonName, o)
}

func newCA(parent *CA, commonName string, o options) (*CA, error) {
	key, err := generateKey(o.keyType)
	if err != nil {
		return nil, err
	}
	tmpl, err := baseTemplate(commonName, o, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	if parent != nil {
		tmpl.MaxPathLen = 0
		tmpl.MaxPathLenZero = true
	}
	issuerCert, issuerKey := tmpl, key
	if parent != nil {
		issuerCert, issuerKey = parent.cert, parent.key
	}
	cert, err := sign(tmpl, issuerCert, key.Public(), issuerKey)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate %q: %w", commonName, err)
	}
	return &CA{cert: cert, key: key, parent: parent}, nil
}

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Signer returns the CA's private key.
func (ca *CA) Signer() crypto.Signer { return ca.key }

// Root returns the root CA above ca, or ca itself when it is a root.
func (ca *CA) Root() *CA {
	for ca.parent != nil {
		ca = ca.parent
	}
	return ca
}

// CertPool returns a new pool holding only the root of ca's hierarchy: the
// trust anchor to put in tls.Config.RootCAs or ClientCAs.
func (ca *CA) CertPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root().cert)
	return pool
}

// CertPEM returns ca's own certificate, PEM encoded.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// TLSCertificate returns the CA certificate and key as a tls.Certificate, for
// code that wants a CA in that form (for example a proxy minting certificates
// for intercepted hosts). Its chain holds the intermediates above ca, if any.
func (ca *CA) TLSCertificate() *tls.Certificate {
	chain := [][]byte{ca.cert.Raw}
	for p := ca.parent; p != nil && p.parent != nil; p = p.parent {
		chain = append(chain, p.cert.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: ca.key, Leaf: ca.cert}
}

// IssueServer issues a TLS server certificate for dnsNames and ips. Options:
// WithKeyType, WithValidity, WithSerialNumber, WithSubject, WithExtKeyUsage,
// WithIntermediate. The result has Leaf set and carries the intermediates, if
// any, after the leaf.
func (ca *CA) IssueServer(dnsNames []string, ips []net.IP, opts ...Option) (*tls.Certificate, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return nil, errors.New("pki: IssueServer needs at least one DNS name or IP address")
	}
	o := buildOptions(opts)
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	} else {
		cn = ips[0].String()
	}
	return ca.issue(cn, o, func(t *x509.Certificate) {
		t.DNSNames = append([]string(nil), dnsNames...)
		t.IPAddresses = append([]net.IP(nil), ips...)
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	})
}

// IssueClient issues a TLS client certificate with the given common name.
// Options as for IssueServer.
func (ca *CA) IssueClient(commonName string, opts ...Option) (*tls.Certificate, error) {
	o := buildOptions(opts)
	return ca.issue(commonName, o, func(t *x509.Certificate) {
		t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	})
}

func (ca *CA) issue(commonName string, o options, customize func(*x509.Certificate)) (*tls.Certificate, error) {
	issuer := ca
	if o.intermediate != nil {
		if !o.intermediate.descendsFrom(ca) {
			return nil, fmt.Errorf("pki: intermediate %q was not made by CA %q",
				o.intermediate.cert.Subject.CommonName, ca.cert.Subject.CommonName)
		}
		issuer = o.intermediate
	}
	key, err := generateKey(o.keyType)
	if err != nil {
		return nil, err
	}
	tmpl, err := baseTemplate(commonName, o, DefaultLeafValidity)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if o.keyType == RSA2048 {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	customize(tmpl)
	if o.extKeyUsage != nil {
		tmpl.ExtKeyUsage = o.extKeyUsage
	}
	leaf, err := sign(tmpl, issuer.cert, key.Public(), issuer.key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate %q: %w", commonName, err)
	}
	chain := [][]byte{leaf.Raw}
	for p := issuer; p.parent != nil; p = p.parent {
		chain = append(chain, p.cert.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

func (ca *CA) descendsFrom(ancestor *CA) bool {
	for p := ca; p != nil; p = p.parent {
		if p == ancestor {
			return true
		}
	}
	return false
}

// Chain returns the parsed certificates of c: the leaf first, then the
// intermediates. It parses c.Certificate and does not rely on c.Leaf.
func Chain(c *tls.Certificate) ([]*x509.Certificate, error) {
	if c == nil || len(c.Certificate) == 0 {
		return nil, errors.New("pki: empty certificate")
	}
	out := make([]*x509.Certificate, 0, len(c.Certificate))
	for i, der := range c.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d of the chain: %w", i, err)
		}
		out = append(out, cert)
	}
	return out, nil
}

// Fingerprint returns the lowercase hex SHA-256 of the certificate's DER
// encoding, the key the Banking Circle emulator counts handshakes by.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func generateKey(k KeyType) (crypto.Signer, error) {
	switch k {
	case ECDSAP256:
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
		}
		return key, nil
	case RSA2048:
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("generating RSA-2048 key: %w", err)
		}
		return key, nil
	default:
		return nil, fmt.Errorf("pki: unknown key type %v", k)
	}
}

func baseTemplate(commonName string, o options, validity time.Duration) (*x509.Certificate, error) {
	serial := o.serial
	if serial == nil {
		var err error
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		serial.SetBit(serial, 127, 1) // always 16 bytes of hex, never zero
	}
	notBefore, notAfter := o.notBefore, o.notAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-backdate)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(validity)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("pki: NotAfter %v is not after NotBefore %v", notAfter, notBefore)
	}
	subject := pkix.Name{CommonName: commonName}
	if o.subject != nil {
		subject = *o.subject
		if subject.CommonName == "" {
			subject.CommonName = commonName
		}
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}, nil
}

func sign(tmpl, issuer *x509.Certificate, pub crypto.PublicKey, issuerKey crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, issuerKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}
