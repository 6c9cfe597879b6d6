package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/tokenproxy/tokenproxy/internal/atomicfile"
)

// EncodePFX encodes cert (key, leaf and intermediates) as a PKCS#12 file
// protected by passcode, with modern algorithms (PBES2, AES-256-CBC,
// HMAC-SHA-256), as OpenSSL 3 writes by default.
func EncodePFX(cert *tls.Certificate, passcode string) ([]byte, error) {
	return EncodePFXWith(pkcs12.Modern, cert, passcode)
}

// EncodeLegacyPFX encodes cert as a PKCS#12 file with the legacy algorithms
// that OpenSSL before 3.0 and older Windows wrote by default and that many
// banks still ship: certificates encrypted with 40-bit RC2, the key with
// 3DES, SHA-1 MAC. OpenSSL 3 reads such files only with -legacy.
func EncodeLegacyPFX(cert *tls.Certificate, passcode string) ([]byte, error) {
	return EncodePFXWith(pkcs12.LegacyRC2, cert, passcode)
}

// EncodePFXWith encodes cert as a PKCS#12 file with the given encoder, for
// example pkcs12.LegacyDES (3DES for both certificates and key).
func EncodePFXWith(enc *pkcs12.Encoder, cert *tls.Certificate, passcode string) ([]byte, error) {
	chain, err := Chain(cert)
	if err != nil {
		return nil, err
	}
	pfx, err := enc.Encode(cert.PrivateKey, chain[0], chain[1:], passcode)
	if err != nil {
		return nil, fmt.Errorf("encoding PKCS#12: %w", err)
	}
	return pfx, nil
}

// EncodePEM returns the certificate chain (leaf first) as PEM "CERTIFICATE"
// blocks and the private key as a PKCS#8 "PRIVATE KEY" block.
func EncodePEM(cert *tls.Certificate) (certPEM, keyPEM []byte, err error) {
	certPEM, err = encodeChainPEM(cert)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding private key: %w", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeTraditionalKeyPEM returns the private key in its algorithm-specific
// form: PKCS#1 "RSA PRIVATE KEY" or SEC 1 "EC PRIVATE KEY", as older tools
// write it.
func EncodeTraditionalKeyPEM(cert *tls.Certificate) ([]byte, error) {
	switch k := cert.PrivateKey.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("encoding EC private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	default:
		return nil, fmt.Errorf("pki: unsupported private key type %T", cert.PrivateKey)
	}
}

func encodeChainPEM(cert *tls.Certificate) ([]byte, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, errors.New("pki: empty certificate")
	}
	var buf bytes.Buffer
	for _, der := range cert.Certificate {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// Files names the files written by WriteFiles.
type Files struct {
	Cert string // PEM chain, leaf first
	Key  string // PKCS#8 PEM private key
	PFX  string // PKCS#12 (modern algorithms) protected by the passcode
}

// WriteFiles writes cert to dir as <name>.crt, <name>.key and <name>.pfx (the
// last protected by passcode) and returns their paths. Key and PFX files get
// mode 0600. Each file is written to a temporary name and renamed into place,
// so a watcher never sees a half-written file (rotation tests rely on this).
func WriteFiles(dir, name string, cert *tls.Certificate, passcode string) (Files, error) {
	certPEM, keyPEM, err := EncodePEM(cert)
	if err != nil {
		return Files{}, err
	}
	pfx, err := EncodePFX(cert, passcode)
	if err != nil {
		return Files{}, err
	}
	f := Files{
		Cert: filepath.Join(dir, name+".crt"),
		Key:  filepath.Join(dir, name+".key"),
		PFX:  filepath.Join(dir, name+".pfx"),
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.Cert, certPEM, 0o644},
		{f.Key, keyPEM, 0o600},
		{f.PFX, pfx, 0o600},
	} {
		if err := WriteFileAtomic(w.path, w.data, w.mode); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// WriteCertFile writes ca's certificate as PEM to path (mode 0644), for use as
// a CA bundle file.
func (ca *CA) WriteCertFile(path string) error {
	return WriteFileAtomic(path, ca.CertPEM(), 0o644)
}

// WriteFileAtomic replaces path with data in one step (atomicfile.Write), so
// that a reloader polling the file never reads it half written.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return atomicfile.Write(path, data, mode)
}
