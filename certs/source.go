package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Source yields certificate material from where it is kept (files, Vault).
// Fetch returns (nil, version, nil) when nothing changed since version; the
// version is opaque and never logged. A Source returns only material that
// fully parsed: material it read and could not use is returned as a
// *RefusedError with the new version, so that version is not fetched again;
// any other error means the source could not be read.
type Source interface {
	Fetch(ctx context.Context, version string) (cert *tls.Certificate, newVersion string, err error)
	// String describes the source for logs; it never contains a secret.
	String() string
}

// FileSource reads a PKCS#12 file with its passcode, or a PEM certificate
// and key, from disk. Its version is a hash of the file contents and the
// passcode, so replacing either is noticed.
type FileSource struct {
	PKCS12File string
	Passcode   secret.Source
	CertFile   string
	KeyFile    string
}

// String implements Source.
func (s *FileSource) String() string {
	if s.PKCS12File != "" {
		return "pkcs12 file " + s.PKCS12File
	}
	return "pem files " + s.CertFile + ", " + s.KeyFile
}

// Fetch implements Source.
func (s *FileSource) Fetch(ctx context.Context, version string) (*tls.Certificate, string, error) {
	h := sha256.New()
	if s.PKCS12File != "" {
		data, err := os.ReadFile(s.PKCS12File)
		if err != nil {
			return nil, version, fmt.Errorf("reading PKCS#12 file: %w", err)
		}
		pass, err := s.Passcode.Get(ctx)
		if err != nil {
			return nil, version, fmt.Errorf("reading PKCS#12 passcode (%s): %w", s.Passcode, err)
		}
		h.Write(data)
		h.Write([]byte{0})
		h.Write([]byte(pass.Reveal()))
		v := hex.EncodeToString(h.Sum(nil))
		if v == version {
			return nil, version, nil
		}
		c, err := ParsePKCS12(data, pass.Reveal())
		if err != nil {
			return nil, v, Refuse(fmt.Errorf("%s: %w", s.PKCS12File, err))
		}
		return c, v, nil
	}
	certPEM, err := os.ReadFile(s.CertFile)
	if err != nil {
		return nil, version, fmt.Errorf("reading certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return nil, version, fmt.Errorf("reading key file: %w", err)
	}
	h.Write(certPEM)
	h.Write([]byte{0})
	h.Write(keyPEM)
	v := hex.EncodeToString(h.Sum(nil))
	if v == version {
		return nil, version, nil
	}
	c, err := ParsePEM(certPEM, keyPEM)
	if err != nil {
		return nil, v, Refuse(fmt.Errorf("%s, %s: %w", s.CertFile, s.KeyFile, err))
	}
	return c, v, nil
}

// StaticSource serves one certificate that never changes (embedded demo material, tests).
type StaticSource struct {
	Cert *tls.Certificate
	Desc string
}

// Fetch implements Source.
func (s *StaticSource) Fetch(_ context.Context, version string) (*tls.Certificate, string, error) {
	if version == "static" {
		return nil, version, nil
	}
	return s.Cert, "static", nil
}

// String implements Source.
func (s *StaticSource) String() string { return s.Desc }
