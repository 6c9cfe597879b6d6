package intercept

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// CA signs interception leaf certificates. Implementations: FileCA (PEM
// files, reloaded on change), VaultCA (Vault's PKI engine) and GeneratedCA
// (in memory, one per process). Signing is unexported on purpose: outside
// this package a certificate can only be had through Leaves, whose every
// issuing method takes the Allow check.
type CA interface {
	// sign issues a certificate for host (a DNS name or an IP literal, as its
	// only SAN) over key's public half, valid for ttl. It returns the chain,
	// leaf first, DER encoded, without the root an app trusts.
	sign(ctx context.Context, host string, key crypto.Signer, ttl time.Duration) ([][]byte, error)
	// Generation changes whenever the CA changes (a rotation); leaves cached
	// under an older generation are no longer served.
	Generation() uint64
	// String describes the CA for logs; it never contains key material.
	String() string
}

// Reason says why a tunnel or a leaf was refused. It is a metric label.
type Reason string

// Refusal reasons.
const (
	// ReasonNotIntercepted: no intercepting route for the host.
	ReasonNotIntercepted Reason = "not_intercepted"
	// ReasonSNIMismatch: the TLS server name differs from the CONNECT host.
	ReasonSNIMismatch Reason = "sni_mismatch"
	// ReasonHostMismatch: a request inside the tunnel named another host.
	ReasonHostMismatch Reason = "host_mismatch"
	// ReasonNotTLS: the tunnel carried something other than TLS.
	ReasonNotTLS Reason = "not_tls"
	// ReasonRateLimited: leaf issuance is over its rate limit.
	ReasonRateLimited Reason = "rate_limited"
	// ReasonCAUnavailable: the CA could not sign (not loaded, Vault down).
	ReasonCAUnavailable Reason = "ca_unavailable"
	// ReasonBadHost: the host is not a valid DNS name or IP literal.
	ReasonBadHost Reason = "bad_host"
	// ReasonPortRefused: a CONNECT to an intercepted host named a port
	// the route does not serve.
	ReasonPortRefused Reason = "port_refused"
)

// RefusedError is why a handshake or a request inside a tunnel was refused.
// It never carries key material.
type RefusedError struct {
	Reason Reason
	Host   string // the CONNECT host
	Got    string // what was presented instead (SNI or inner Host), if any
	Err    error  // the cause, for ReasonCAUnavailable
}

func (e *RefusedError) Error() string {
	switch e.Reason {
	case ReasonNotIntercepted:
		return fmt.Sprintf("no intercepting route for host %q", e.Host)
	case ReasonSNIMismatch:
		return fmt.Sprintf("TLS server name %q differs from the CONNECT host %q", e.Got, e.Host)
	case ReasonHostMismatch:
		return fmt.Sprintf("request for host %q inside a tunnel to %q", e.Got, e.Host)
	case ReasonNotTLS:
		return fmt.Sprintf("the tunnel to %q must carry TLS", e.Host)
	case ReasonRateLimited:
		return fmt.Sprintf("interception certificate for %q not issued: issuance is over its rate limit", e.Host)
	case ReasonCAUnavailable:
		return fmt.Sprintf("interception certificate for %q not issued: %v", e.Host, e.Err)
	case ReasonBadHost:
		return fmt.Sprintf("host %q is not a DNS name or IP address", e.Host)
	default:
		return fmt.Sprintf("interception of %q refused (%s)", e.Host, e.Reason)
	}
}

// Unwrap returns the cause.
func (e *RefusedError) Unwrap() error { return e.Err }

// Allow reports whether host (lower case, no port, no trailing dot) has an
// intercepting route. Every issuing function takes one; nil allows nothing.
type Allow func(host string) bool

// Observer receives the interception events, for metrics. Methods must be
// cheap and safe for concurrent use.
type Observer interface {
	// Intercepted: a leaf was handed to an app's handshake for host.
	Intercepted(host string)
	// Refused: a handshake, a leaf or an inner request was refused.
	Refused(host string, reason Reason)
	// LeafIssued: the CA signed a new leaf for host, taking d.
	LeafIssued(host string, d time.Duration)
	// CacheHit: a cached leaf served host.
	CacheHit(host string)
}

// NopObserver ignores every event.
type NopObserver struct{}

// Intercepted implements Observer.
func (NopObserver) Intercepted(string) {}

// Refused implements Observer.
func (NopObserver) Refused(string, Reason) {}

// LeafIssued implements Observer.
func (NopObserver) LeafIssued(string, time.Duration) {}

// CacheHit implements Observer.
func (NopObserver) CacheHit(string) {}

// errNotCA is returned for a certificate that may not sign certificates.
var errNotCA = errors.New("the certificate is not a CA certificate (it needs basicConstraints CA:TRUE and the keyCertSign key usage)")

// checkCA verifies that cert may sign certificates.
func checkCA(cert *x509.Certificate) error {
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errNotCA
	}
	return nil
}
