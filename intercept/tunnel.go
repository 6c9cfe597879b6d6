package intercept

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
)

// Tunnel is one accepted CONNECT whose TLS tokenproxy terminates. The proxy
// (proxy/connect.go) makes it with Open once the route is known, checks the
// caller, answers 200, runs Handshake on the connection and calls Check on
// every decrypted request.
type Tunnel struct {
	// Host is the CONNECT host as Allow sees it; Port its port ("443" when absent).
	Host, Port string

	leaves *Leaves
	allow  Allow
}

// Open checks that connectHost (host:port from the CONNECT line) is
// intercepted and returns the tunnel. A host allow refuses gets a
// *RefusedError with ReasonNotIntercepted: refuse the CONNECT.
func (l *Leaves) Open(connectHost string, allow Allow) (*Tunnel, error) {
	h, err := NormalizeHost(connectHost)
	if err != nil {
		l.cfg.Observer.Refused(connectHost, ReasonBadHost)
		return nil, err
	}
	if allow == nil || !allow(h) {
		l.cfg.Observer.Refused(h, ReasonNotIntercepted)
		return nil, &RefusedError{Reason: ReasonNotIntercepted, Host: h}
	}
	port := "443"
	if _, p, err := net.SplitHostPort(connectHost); err == nil && p != "" {
		port = p
	}
	return &Tunnel{Host: h, Port: port, leaves: l, allow: allow}, nil
}

// Handshake terminates the app's TLS on conn, the tunnel's bytes after the
// 200, with TLSConfig; ctx bounds it. A tunnel whose first bytes are not a
// TLS handshake (plain HTTP sent into the tunnel, say) is refused with a
// *RefusedError (ReasonNotTLS) and counted; so is a ClientHello for another
// server name (ReasonSNIMismatch). Neither error carries the bytes received.
// Other failures (the app gave up, a TLS alert) are returned as they are.
// On an error conn is left open: the caller records the refusal first and
// then closes it, so the app sees the end only once the refusal is counted
// and logged.
func (t *Tunnel) Handshake(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	tc := tls.Server(conn, t.TLSConfig())
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return tc, nil
	}
	// crypto/tls reports a first record that is not a TLS handshake record
	// as a RecordHeaderError, before it reads any further.
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		t.leaves.cfg.Observer.Refused(t.Host, ReasonNotTLS)
		return nil, &RefusedError{Reason: ReasonNotTLS, Host: t.Host}
	}
	return nil, err
}

// TLSConfig is the app-side server configuration for the tunnel: TLS 1.2
// or later, ALPN http/1.1 only, and a certificate only for a ClientHello
// whose server name is the CONNECT host (an IP host may send none, as
// clients do not send IP literals in SNI). A mismatch fails the handshake
// with a *RefusedError (ReasonSNIMismatch).
func (t *Tunnel) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: t.getCertificate,
	}
}

func (t *Tunnel) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := t.checkSNI(hello.ServerName); err != nil {
		t.leaves.cfg.Observer.Refused(t.Host, ReasonSNIMismatch)
		return nil, err
	}
	c, err := t.leaves.Certificate(hello.Context(), t.Host, t.allow)
	if err != nil {
		return nil, err
	}
	t.leaves.cfg.Observer.Intercepted(t.Host)
	return c, nil
}

func (t *Tunnel) checkSNI(sni string) error {
	isIP := net.ParseIP(t.Host) != nil
	if sni == "" && isIP {
		return nil
	}
	if got, err := NormalizeHost(sni); err == nil && got == t.Host {
		return nil
	}
	return &RefusedError{Reason: ReasonSNIMismatch, Host: t.Host, Got: sni}
}

// Check accepts a request read from the tunnel only if its URL says https
// (the proxy sets the scheme only for requests read over the tunnel's TLS)
// and names the CONNECT host and port: the proxy builds the URL's host from
// the inner Host header, so without this a caller admitted to one route
// could reach another.
func (t *Tunnel) Check(r *http.Request) error {
	if r.URL == nil || r.URL.Scheme != "https" {
		t.leaves.cfg.Observer.Refused(t.Host, ReasonNotTLS)
		return &RefusedError{Reason: ReasonNotTLS, Host: t.Host}
	}
	h, err := NormalizeHost(r.URL.Host)
	port := r.URL.Port()
	if port == "" {
		port = "443"
	}
	if err != nil || h != t.Host || port != t.Port {
		t.leaves.cfg.Observer.Refused(t.Host, ReasonHostMismatch)
		return &RefusedError{Reason: ReasonHostMismatch, Host: t.Host, Got: strings.ToLower(r.URL.Host)}
	}
	return nil
}
