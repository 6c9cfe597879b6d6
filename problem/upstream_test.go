package problem_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// Each failure is produced for real (TLS servers with generated
// certificates, a closed port) and classified by its types alone.
func TestClassify(t *testing.T) {
	ca, err := pki.NewCA("upstream CA")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pki.NewCA("other CA")
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mtls := httptest.NewUnstartedServer(http.NotFoundHandler())
	mtls.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	mtls.StartTLS()
	defer mtls.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	get := func(roots *pki.CA, url string) error {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots.CertPool()}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	tests := []struct {
		name string
		err  func() error
		want problem.Failure
	}{
		{"server certificate from an unknown CA", func() error { return get(other, mtls.URL) }, problem.Untrusted},
		{"no client certificate", func() error { return get(ca, mtls.URL) }, problem.ClientCertRefused},
		{"not TLS", func() error { return get(ca, "https://"+plain.Listener.Addr().String()) }, problem.HandshakeFailed},
		{"port closed", func() error { return get(ca, "https://"+closedAddr) }, problem.Unreachable},
		{"name not found", func() error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}
		}, problem.NameNotFound},
		{"deadline", func() error { return fmt.Errorf("round trip: %w", context.DeadlineExceeded) }, problem.Timeout},
		{"other", func() error { return errors.New("EOF") }, problem.Failed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err()
			if err == nil {
				t.Fatal("no error")
			}
			if got := problem.Classify(err); got != tc.want {
				t.Fatalf("Classify(%v) = %d; want %d", err, got, tc.want)
			}
		})
	}
}

func TestAlertFromPeer(t *testing.T) {
	err := &net.OpError{Op: "remote error", Err: tls.AlertError(116)}
	if a, ok := problem.Alert(fmt.Errorf("x: %w", err)); !ok || a != 116 {
		t.Fatalf("Alert = %d, %v", a, ok)
	}
	if _, ok := problem.Alert(errors.New("remote error: tls: bad certificate")); ok {
		t.Fatal("a message alone is not an alert")
	}
}
