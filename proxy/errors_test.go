package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/signer"
)

// Each upstream failure maps to its status and code, by type.
func TestUpstreamErrorMapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("round trip: %w", err) }
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"unknown authority", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), http.StatusBadGateway, CodeUpstreamUntrusted},
		{"wrong host name", wrap(x509.HostnameError{Host: "x"}), http.StatusBadGateway, CodeUpstreamUntrusted},
		{"client certificate refused", wrap(&net.OpError{Op: "remote error", Err: tls.AlertError(42)}), http.StatusBadGateway, CodeClientCertRefused},
		{"certificate required", wrap(&net.OpError{Op: "remote error", Err: tls.AlertError(116)}), http.StatusBadGateway, CodeClientCertRefused},
		{"other alert", wrap(&net.OpError{Op: "remote error", Err: tls.AlertError(40)}), http.StatusBadGateway, CodeUpstreamTLS},
		{"dial refused", wrap(&net.OpError{Op: "dial", Err: errors.New("connection refused")}), http.StatusBadGateway, CodeUpstreamDial},
		{"no such host", wrap(&net.OpError{Op: "dial", Err: &net.DNSError{IsNotFound: true}}), http.StatusBadGateway, CodeUpstreamDial},
		{"deadline", wrap(context.DeadlineExceeded), http.StatusGatewayTimeout, CodeUpstreamTimeout},
		{"other", errors.New("unexpected EOF"), http.StatusBadGateway, CodeUpstreamFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := upstreamError(tc.err)
			if e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("%d %s; want %d %s", e.Status, e.Code, tc.status, tc.code)
			}
			if !errors.Is(e.cause, tc.err) {
				t.Fatal("the cause is not kept for the log")
			}
		})
	}
}

func TestSigningErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"vault down", &route.SigningError{Err: errors.New("x"), Unavailable: true}, http.StatusServiceUnavailable, CodeSigningUnavailable},
		{"missing header", &route.SigningError{Err: signer.ErrMissingHeader, MissingHeader: true}, http.StatusBadRequest, CodeMissingHeader},
		{"other", &route.SigningError{Err: errors.New("x")}, http.StatusInternalServerError, CodeSigningFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := signingError(tc.err); e.Status != tc.status || e.Code != tc.code {
				t.Fatalf("%d %s; want %d %s", e.Status, e.Code, tc.status, tc.code)
			}
		})
	}
}
