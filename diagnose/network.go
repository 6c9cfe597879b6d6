package diagnose

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/problem"
)

func (d *routeCheck) checkNetwork(ctx context.Context, what, hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "443"
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		d.step("dns "+what, Fail, fmt.Sprintf("%s: %v", host, err), fixFor(problem.NameNotFound, ""))
		return false
	}
	d.step("dns "+what, OK, host+" -> "+strings.Join(addrs, ", "), "")
	start := time.Now()
	addr := net.JoinHostPort(host, port)
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		d.step("tcp "+what, Fail, err.Error(), fixFor(problem.Unreachable, addr))
		return false
	}
	conn.Close()
	d.step("tcp "+what, OK, fmt.Sprintf("connected to %s in %s", addr, time.Since(start).Round(time.Millisecond)), "")
	return true
}

// checkHandshake performs a TLS handshake with the route's own TLS
// configuration and the client certificate, and tells "we do not trust the
// server" from "the server rejected our certificate". With TLS 1.3 the
// server's verdict on the client certificate arrives after the client's
// handshake completes, so a short read follows.
func (d *routeCheck) checkHandshake(ctx context.Context, name, hostport string) bool {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, "443")
	}
	conf, err := assemble.TLSConfig(d.path(), d.rc.TLS, d.o.Build)
	if err != nil {
		d.step(name, Fail, err.Error(), "give a PEM bundle in tls.ca_file")
		return false
	}
	if d.cert != nil {
		conf.Certificates = []tls.Certificate{*d.cert}
	}
	dctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	conn, err := (&tls.Dialer{Config: conf}).DialContext(dctx, "tcp", hostport)
	if err == nil {
		tc := conn.(*tls.Conn)
		_ = tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var b [1]byte
		_, err = tc.Read(b[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = nil
		}
		st := tc.ConnectionState()
		tc.Close()
		if err == nil {
			d.step(name, OK, fmt.Sprintf("%s, server %q verified, client certificate accepted", tls.VersionName(st.Version), st.PeerCertificates[0].Subject.CommonName), "")
			return true
		}
	}
	f := problem.Classify(err)
	switch f {
	case problem.Untrusted:
		var verr *tls.CertificateVerificationError
		detail := err.Error()
		if errors.As(err, &verr) {
			detail = verr.Err.Error()
		}
		d.step(name, Fail, "tokenproxy does not trust the server's certificate: "+detail, fixFor(f, ""))
	case problem.ClientCertRefused:
		a, _ := problem.Alert(err)
		d.step(name, Fail, "the server rejected our client certificate ("+strings.TrimPrefix(a.Error(), "tls: ")+")", fixFor(f, ""))
	default:
		d.step(name, Fail, err.Error(), fixFor(f, ""))
	}
	return false
}

// fixFor is the fix `check` prints for an upstream failure; addr names the
// address a connection failed to.
func fixFor(f problem.Failure, addr string) string {
	switch f {
	case problem.Untrusted:
		return "set tls.ca_file to the CA bundle that issued the server's certificate (or check tls.server_name)"
	case problem.ClientCertRefused:
		return "use the certificate the provider issued for this environment (sandbox and production differ), and check it is not expired or revoked"
	case problem.NameNotFound:
		return "check the host name and the resolver (and the outbound firewall)"
	case problem.Unreachable:
		return "allow outbound traffic to " + addr + " in the firewall/NetworkPolicy"
	case problem.Timeout:
		return "check that the upstream is up and that the outbound firewall lets the traffic through"
	case problem.HandshakeFailed:
		return "check that the upstream speaks TLS 1.2 or later on this port"
	}
	return ""
}
