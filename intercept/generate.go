package intercept

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/atomicfile"
)

// GenerateConfig asks for a fresh CA made in memory when the process
// starts. Its certificate (never its key) is written to WriteCertTo, a path
// the app's container mounts (an emptyDir in Kubernetes) and trusts.
//
//	interception:
//	  ca:
//	    generate: {write_cert_to: /var/run/tokenproxy/ca.crt}
type GenerateConfig struct {
	WriteCertTo string `yaml:"write_cert_to"`
	// Validity of the CA certificate (default 397 days). Leaves never outlive it.
	Validity time.Duration `yaml:"validity,omitempty"`
	// Hosts, if set, name-constrain the CA to these DNS names (and their
	// subdomains) and IP addresses: the intercepted hosts. With a DNS name
	// and no IP, every IP address is excluded, and the other way round.
	Hosts []string `yaml:"-"`
	// CommonName of the CA (default "tokenproxy interception CA").
	CommonName string `yaml:"common_name,omitempty"`
}

// GeneratedCA is an in-memory ECDSA P-256 CA whose key exists only in this
// process. Rotate replaces it (e.g. to test rotation, or on demand).
type GeneratedCA struct {
	cfg GenerateConfig
	now func() time.Time

	mu  sync.Mutex // serialises Rotate
	cur atomic.Pointer[localCA]
	pem atomic.Pointer[[]byte]
	gen atomic.Uint64
}

// Generate makes the CA and writes its certificate. now may be nil.
func Generate(cfg GenerateConfig, now func() time.Time) (*GeneratedCA, error) {
	if now == nil {
		now = time.Now
	}
	if cfg.Validity <= 0 {
		cfg.Validity = 397 * 24 * time.Hour
	}
	if cfg.CommonName == "" {
		cfg.CommonName = "tokenproxy interception CA"
	}
	g := &GeneratedCA{cfg: cfg, now: now}
	if err := g.Rotate(); err != nil {
		return nil, err
	}
	return g, nil
}

// Rotate makes a new key and certificate, writes the certificate, then
// serves the new CA. On error the previous CA keeps serving.
func (g *GeneratedCA) Rotate() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the interception CA key: %w", err)
	}
	tmpl, err := g.template()
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("signing the interception CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parsing the interception CA certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if g.cfg.WriteCertTo != "" {
		if err := atomicfile.Write(g.cfg.WriteCertTo, certPEM, 0o644); err != nil {
			return fmt.Errorf("interception.ca.generate.write_cert_to: %w", err)
		}
	}
	g.cur.Store(&localCA{cert: cert, key: crypto.Signer(key)})
	g.pem.Store(&certPEM)
	g.gen.Add(1)
	return nil
}

func (g *GeneratedCA) template() (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	now := g.now()
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: g.cfg.CommonName, SerialNumber: serial.Text(16)[:8]},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(g.cfg.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if err := constrain(t, g.cfg.Hosts); err != nil {
		return nil, err
	}
	return t, nil
}

// constrain limits the CA to hosts with a critical name-constraints
// extension. An empty list leaves the CA unconstrained.
func constrain(t *x509.Certificate, hosts []string) error {
	if len(hosts) == 0 {
		return nil
	}
	for _, h := range hosts {
		n, err := NormalizeHost(h)
		if err != nil {
			return fmt.Errorf("name-constraining the interception CA: %w", err)
		}
		if ip := net.ParseIP(n); ip != nil {
			bits := 8 * len(ip.To16())
			if ip4 := ip.To4(); ip4 != nil {
				ip, bits = ip4, 32
			}
			t.PermittedIPRanges = append(t.PermittedIPRanges, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
		} else {
			t.PermittedDNSDomains = append(t.PermittedDNSDomains, n)
		}
	}
	if len(t.PermittedIPRanges) == 0 {
		t.ExcludedIPRanges = []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		}
	}
	if len(t.PermittedDNSDomains) == 0 {
		t.PermittedDNSDomains = []string{"invalid"} // a reserved name no host has
	}
	t.PermittedDNSDomainsCritical = true
	return nil
}

// CertPEM returns the current CA certificate, PEM encoded (never the key).
func (g *GeneratedCA) CertPEM() []byte { return *g.pem.Load() }

// Certificate returns the current CA certificate.
func (g *GeneratedCA) Certificate() *x509.Certificate { return g.cur.Load().cert }

// sign implements CA.
func (g *GeneratedCA) sign(_ context.Context, host string, key crypto.Signer, ttl time.Duration) ([][]byte, error) {
	return g.cur.Load().sign(host, key.Public(), g.now(), ttl)
}

// Generation implements CA.
func (g *GeneratedCA) Generation() uint64 { return g.gen.Load() }

// String implements CA.
func (g *GeneratedCA) String() string {
	if g.cfg.WriteCertTo == "" {
		return "generated interception CA"
	}
	return "generated interception CA (certificate at " + g.cfg.WriteCertTo + ")"
}
