package problem

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"reflect"
)

// Failure is what went wrong in an exchange with an upstream.
type Failure int

// Failures, as told apart by Classify.
const (
	// Failed is any other failure.
	Failed Failure = iota
	// Untrusted: tokenproxy does not trust the upstream's certificate.
	Untrusted
	// ClientCertRefused: the upstream refused tokenproxy's client certificate.
	ClientCertRefused
	// HandshakeFailed: the TLS handshake failed for another reason.
	HandshakeFailed
	// NameNotFound: the upstream's host name did not resolve.
	NameNotFound
	// Unreachable: no connection could be made.
	Unreachable
	// Timeout: the upstream did not answer in time.
	Timeout
)

// clientCertAlerts are the TLS alerts a server sends when it refuses the
// client's certificate (RFC 8446 section 6.2).
var clientCertAlerts = map[tls.AlertError]bool{
	42:  true, // bad_certificate
	43:  true, // unsupported_certificate
	44:  true, // certificate_revoked
	45:  true, // certificate_expired
	46:  true, // certificate_unknown
	48:  true, // unknown_ca
	49:  true, // access_denied
	116: true, // certificate_required
}

// Classify tells what kind of failure err is, by its types alone.
func Classify(err error) Failure {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
		dns   *net.DNSError
		oerr  *net.OpError
		nerr  net.Error
	)
	switch {
	case errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cierr):
		return Untrusted
	case errors.As(err, &dns):
		return NameNotFound
	}
	if a, ok := Alert(err); ok {
		if clientCertAlerts[a] {
			return ClientCertRefused
		}
		return HandshakeFailed
	}
	switch {
	case errors.As(err, &oerr) && oerr.Op == "dial":
		return Unreachable
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &nerr) && nerr.Timeout()):
		return Timeout
	case errors.As(err, new(tls.RecordHeaderError)):
		return HandshakeFailed
	}
	return Failed
}

// Alert returns the TLS alert in err: one the peer sent (crypto/tls reports
// it as a *net.OpError with Op "remote error" around its own alert type, a
// uint8) or one tokenproxy sent (a tls.AlertError).
func Alert(err error) (tls.AlertError, bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return ae, true
	}
	var oerr *net.OpError
	if errors.As(err, &oerr) && oerr.Op == "remote error" && oerr.Err != nil {
		if v := reflect.ValueOf(oerr.Err); v.Kind() == reflect.Uint8 {
			return tls.AlertError(v.Uint()), true //nolint:gosec // G115: the value is a uint8 (checked by Kind above)
		}
	}
	return 0, false
}
