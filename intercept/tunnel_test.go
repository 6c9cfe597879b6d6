package intercept

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Handshake serves a TLS client for the CONNECT host, and refuses a tunnel
// that starts with anything but TLS (counted as not_tls) or a ClientHello
// for another name (sni_mismatch); the refusal never quotes the bytes sent.
func TestTunnelHandshake(t *testing.T) {
	ca := mustGenerate(t, GenerateConfig{})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	tests := []struct {
		name   string
		client func(net.Conn) error
		reason Reason // "" for a served handshake
	}{
		{"TLS to the CONNECT host", func(c net.Conn) error {
			return tls.Client(c, &tls.Config{ServerName: "bank.example", RootCAs: roots}).Handshake()
		}, ""},
		{"plain HTTP", func(c net.Conn) error {
			_, err := io.WriteString(c, "GET /accounts HTTP/1.1\r\nHost: bank.example\r\nAuthorization: Bearer app-secret\r\n\r\n")
			return err
		}, ReasonNotTLS},
		{"a handshake record type without a TLS version", func(c net.Conn) error {
			_, err := c.Write([]byte{0x16, 'x', 'x', 'x', 'x', 'x'})
			return err
		}, ReasonNotTLS},
		{"TLS for another host", func(c net.Conn) error {
			return tls.Client(c, &tls.Config{ServerName: "other.example", InsecureSkipVerify: true}).Handshake() //nolint:gosec // the test sends a foreign name
		}, ReasonSNIMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			obs := &countObserver{}
			l := NewLeaves(ca, LeafConfig{Observer: obs})
			tun, err := l.Open("bank.example:443", allowOnly("bank.example"))
			if err != nil {
				t.Fatal(err)
			}
			srv, cli := net.Pipe()
			defer cli.Close()
			go func() {
				_ = tc.client(cli)
				_, _ = io.Copy(io.Discard, cli) // until the server closes
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tc2, err := tun.Handshake(ctx, srv)
			defer srv.Close()
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Handshake: %v", err)
				}
				tc2.Close()
				if obs.get("intercepted bank.example") != 1 {
					t.Fatal("the interception is not counted")
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason != tc.reason || tc2 != nil {
				t.Fatalf("Handshake: %v (conn %v); want a *RefusedError %s", err, tc2, tc.reason)
			}
			if strings.Contains(err.Error(), "Bearer") || strings.Contains(err.Error(), "GET") {
				t.Fatalf("the refusal quotes the bytes received: %v", err)
			}
			if n := obs.get("refused bank.example " + string(tc.reason)); n != 1 {
				t.Fatalf("%s counted %d times, want 1", tc.reason, n)
			}
		})
	}
}
