package consentstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLS failures of OpenPostgres and MigratePostgres; each of the last three
// wraps ErrPostgresTLS, so errors.Is(err, ErrPostgresTLS) holds for all.
var (
	// ErrPostgresTLS: the TLS connection to the server failed.
	ErrPostgresTLS = errors.New("the TLS connection to postgres failed")
	// ErrPostgresTLSRefused: the server does not speak TLS (ssl = off)
	// and the TLS mode requires it.
	ErrPostgresTLSRefused = fmt.Errorf("%w: the server refused TLS (its ssl setting is off)", ErrPostgresTLS)
	// ErrPostgresCertUntrusted: the server's certificate does not chain
	// to a CA of tls.ca_file (or of the system roots).
	ErrPostgresCertUntrusted = fmt.Errorf("%w: the server's certificate is not signed by a trusted CA", ErrPostgresTLS)
	// ErrPostgresCertName: the server's certificate does not name the
	// server (host, or tls.server_name).
	ErrPostgresCertName = fmt.Errorf("%w: the server's certificate is not valid for the name checked", ErrPostgresTLS)
	// ErrPostgresCAFile: tls.ca_file cannot be read or holds no PEM certificate.
	ErrPostgresCAFile = fmt.Errorf("%w: the CA file is not usable", ErrPostgresTLS)
)

// checkCAFile reports an unreadable CA file before pgx's parser does (its
// message would not name the file).
func checkCAFile(path string) error {
	if path == "" || path == "system" {
		return nil
	}
	b, err := os.ReadFile(path) //nolint:gosec // G304: the configured CA bundle
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPostgresCAFile, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("%w: %s holds no PEM certificate", ErrPostgresCAFile, path)
	}
	return nil
}

// classifyTLS names a TLS failure of a connection attempt; nil when err is
// not one. The innermost cause is kept: it says which certificate or name.
func classifyTLS(err error) error {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	var ae tls.AlertError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%w (%w)", ErrPostgresCertUntrusted, ua)
	case errors.As(err, &he):
		return fmt.Errorf("%w (%w)", ErrPostgresCertName, he)
	case errors.As(err, &ie):
		return fmt.Errorf("%w: %w", ErrPostgresTLS, ie)
	case errors.As(err, &ve):
		return fmt.Errorf("%w: %w", ErrPostgresTLS, ve)
	case errors.As(err, &ae):
		return fmt.Errorf("%w: %w", ErrPostgresTLS, ae)
	case errors.As(err, &rh):
		return fmt.Errorf("%w: %w", ErrPostgresTLS, rh)
	case strings.Contains(err.Error(), "server refused TLS connection"):
		return ErrPostgresTLSRefused
	}
	return nil
}
