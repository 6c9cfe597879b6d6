// Package diagnose runs `tokenproxy check`: a live, step-by-step diagnosis of
// each route — files, passcode, certificate, DNS, TCP, the TLS handshake with
// the client certificate, the token fetch and a probe request — printing one
// line per step with a verdict and, when something is wrong, the fix. It
// prints no secret.
package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Verdict of one step; the worst one sets the exit status.
type Verdict int

// Verdicts, from best to worst.
const (
	OK Verdict = iota
	Skip
	Warn
	Fail
)

func (v Verdict) String() string {
	return [...]string{"ok", "skip", "warn", "FAIL"}[v]
}

// Step is one line of the report.
type Step struct {
	Route   string
	Name    string
	Verdict Verdict
	Detail  string
	Fix     string
}

// Report prints steps as they complete and remembers the worst verdict.
type Report struct {
	w     io.Writer
	Steps []Step
	Worst Verdict
}

func (r *Report) add(s Step) Verdict {
	r.Steps = append(r.Steps, s)
	if s.Verdict > r.Worst && s.Verdict != Skip {
		r.Worst = s.Verdict
	}
	line := fmt.Sprintf("[%-4s] %-14s %-28s %s", s.Verdict, s.Route, s.Name, s.Detail)
	if s.Fix != "" {
		line += "\n       " + strings.Repeat(" ", 14) + " fix: " + s.Fix
	}
	fmt.Fprintln(r.w, strings.TrimRight(line, " "))
	return s.Verdict
}

// Options tune the network steps.
type Options struct {
	Timeout time.Duration // per network step; default 10s
	// ExpiryWarning turns a certificate expiring within it into a warning; default 30 days.
	ExpiryWarning time.Duration
	Vault         secret.VaultReader
	// VaultClient provides certificates kept in Vault.
	VaultClient *vaultsrc.Client
}

// Run diagnoses every route of cfg (or only the one named route) and writes
// the report to w.
func Run(ctx context.Context, cfg *config.Config, route string, w io.Writer, o Options) (*Report, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ExpiryWarning <= 0 {
		o.ExpiryWarning = cfg.CertificateExpiryWarning
	}
	if o.ExpiryWarning <= 0 {
		o.ExpiryWarning = config.DefaultExpiryWarning
	}
	rep := &Report{w: w}
	rep.add(Step{Route: "-", Name: "configuration", Verdict: OK, Detail: fmt.Sprintf("%d route(s), decoded and valid", len(cfg.Routes))})
	found := false
	for i, rc := range cfg.Routes {
		if route != "" && rc.Name != route {
			continue
		}
		found = true
		d := &routeCheck{rep: rep, i: i, rc: rc, o: o}
		d.run(ctx)
	}
	if !found {
		return rep, fmt.Errorf("no route named %q", route)
	}
	return rep, nil
}

type routeCheck struct {
	rep  *Report
	i    int
	rc   config.Route
	o    Options
	cert *tls.Certificate
}

func (d *routeCheck) step(name string, v Verdict, detail, fix string) Verdict {
	return d.rep.add(Step{Route: d.rc.Name, Name: name, Verdict: v, Detail: detail, Fix: fix})
}

func (d *routeCheck) run(ctx context.Context) {
	certOK := d.checkCertificate(ctx)
	up, _ := url.Parse(d.rc.Upstream)
	reachable := d.checkNetwork(ctx, "upstream", up.Host)
	var authHost string
	if d.rc.Token != nil {
		u, _ := url.Parse(d.rc.Token.URL)
		authHost = u.Host
		if authHost != up.Host {
			d.checkNetwork(ctx, "token endpoint", authHost)
		}
	}
	if !certOK && d.rc.ClientCert.PKCS12 != nil || !certOK && d.rc.ClientCert.PEM != nil || !certOK && d.rc.ClientCert.Source != nil {
		d.step("tls handshake", Skip, "skipped: no usable client certificate", "")
		d.step("token", Skip, "skipped", "")
		return
	}
	if !reachable {
		d.step("tls handshake", Skip, "skipped: upstream not reachable", "")
		return
	}
	if !d.checkHandshake(ctx, "tls handshake", up.Host) {
		d.step("token", Skip, "skipped: TLS handshake failed", "")
		return
	}
	r, err := proxy.BuildRoute(ctx, d.i, d.rc, proxy.BuildOptions{Log: zap.NewNop(), Limiters: &tokencache.Limiters{}, Vault: d.o.Vault, VaultClient: d.o.VaultClient})
	if err != nil {
		d.step("route", Fail, err.Error(), "")
		return
	}
	defer r.Transport.CloseIdleConnections()
	var tok *tokencache.Token
	if r.Tokens != nil {
		if tok = d.checkToken(ctx, r); tok == nil {
			d.step("probe", Skip, "skipped: no token", "")
			return
		}
	}
	d.checkProbe(ctx, r, tok)
}

func (d *routeCheck) checkCertificate(ctx context.Context) bool {
	cc := d.rc.ClientCert
	var src certs.Source
	var c *tls.Certificate
	var err error
	switch {
	case cc.Source != nil:
		src = cc.Source
	case cc.PKCS12 != nil:
		if !d.readable("pkcs12 file", cc.PKCS12.File) {
			return false
		}
		pass, err := cc.PKCS12.Passcode.Open(d.o.Vault)
		if err == nil {
			_, err = pass.Get(ctx)
		}
		if err != nil {
			d.step("pkcs12 passcode", Fail, err.Error(), "make the passcode secret available")
			return false
		}
		src = &certs.FileSource{PKCS12File: cc.PKCS12.File, Passcode: pass}
		// One fetch decodes the file; its errors say whether the passcode opened it.
		if c, _, err = src.Fetch(ctx, ""); errors.Is(err, certs.ErrWrongPasscode) {
			d.step("pkcs12 passcode", Fail, "the passcode does not open "+cc.PKCS12.File, "set the passcode the provider gave with this .pfx file (Banking Circle: the one you set when resetting the initial passphrase)")
			return false
		} else if err != nil && !errors.Is(err, certs.ErrKeyMismatch) {
			d.step("pkcs12 passcode", Fail, err.Error(), "check that the file is the PKCS#12 (.pfx) the provider issued")
			return false
		}
		d.step("pkcs12 passcode", OK, "opens "+cc.PKCS12.File, "")
	case cc.PEM != nil:
		if !d.readable("certificate file", cc.PEM.CertFile) || !d.readable("key file", cc.PEM.KeyFile) {
			return false
		}
		src = &certs.FileSource{CertFile: cc.PEM.CertFile, KeyFile: cc.PEM.KeyFile}
	case cc.VaultKV != nil && d.o.VaultClient != nil:
		src = d.o.VaultClient.KVCertSource(*cc.VaultKV)
	case cc.VaultTransit != nil && d.o.VaultClient != nil:
		src = d.o.VaultClient.TransitCertSource(*cc.VaultTransit)
	case cc.VaultPKI != nil:
		d.step("client certificate", OK, "issued from Vault PKI role "+cc.VaultPKI.Role+" when the route is built", "")
		return true
	default:
		d.step("client certificate", Skip, "none configured", "")
		return true
	}
	if c == nil && err == nil {
		c, _, err = src.Fetch(ctx, "")
	}
	if err != nil {
		fix := "check that certificate and key belong together"
		if errors.Is(err, certs.ErrKeyMismatch) {
			fix = "pair the certificate with the private key it was issued for"
		}
		d.step("certificate", Fail, err.Error(), fix)
		return false
	}
	if d.rc.TLS.CAFile != "" && !d.readable("ca file", d.rc.TLS.CAFile) {
		return false
	}
	leaf := c.Leaf
	desc := fmt.Sprintf("%q issued by %q, %s, serial %s", leaf.Subject.String(), leaf.Issuer.String(), certs.KeyDescription(leaf.PublicKey), leaf.SerialNumber.Text(16))
	if err := certs.Check(c, time.Now()); err != nil {
		d.step("certificate", Fail, desc+": "+err.Error(), "ask the provider for a renewed certificate")
		return false
	}
	left := time.Until(leaf.NotAfter)
	v, fix := OK, ""
	if left < d.o.ExpiryWarning {
		v, fix = Warn, "renew the certificate before it expires"
	}
	d.step("certificate", v, fmt.Sprintf("%s; valid until %s (%d days), key matches", desc, leaf.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24)), fix)
	if len(c.Certificate) > 1 {
		issuer, err := x509.ParseCertificate(c.Certificate[1])
		if err == nil {
			err = leaf.CheckSignatureFrom(issuer)
		}
		if err != nil {
			d.step("certificate chain", Warn, "the chain in the file does not start with the leaf's issuer", "include the intermediate CA certificates in order")
		} else {
			d.step("certificate chain", OK, fmt.Sprintf("%d CA certificate(s) included", len(c.Certificate)-1), "")
		}
	}
	d.cert = c
	return true
}

func (d *routeCheck) readable(what, path string) bool {
	f, err := os.Open(path) //nolint:gosec // a path from the operator's configuration
	if err != nil {
		fix := "check the path"
		if errors.Is(err, os.ErrPermission) {
			fix = "let tokenproxy's user read it (owner/mode)"
		}
		d.step(what, Fail, err.Error(), fix)
		return false
	}
	f.Close()
	return true
}

func (d *routeCheck) checkNetwork(ctx context.Context, what, hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "443"
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		d.step("dns "+what, Fail, fmt.Sprintf("%s: %v", host, err), "check the host name and the resolver (and the outbound firewall)")
		return false
	}
	d.step("dns "+what, OK, host+" -> "+strings.Join(addrs, ", "), "")
	start := time.Now()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		d.step("tcp "+what, Fail, err.Error(), "allow outbound traffic to "+net.JoinHostPort(host, port)+" in the firewall/NetworkPolicy")
		return false
	}
	conn.Close()
	d.step("tcp "+what, OK, fmt.Sprintf("connected to %s in %s", net.JoinHostPort(host, port), time.Since(start).Round(time.Millisecond)), "")
	return true
}

// checkHandshake performs a TLS handshake with the client certificate and
// tells "we do not trust the server" from "the server rejected our
// certificate". With TLS 1.3 the server's verdict on the client certificate
// arrives after the client's handshake completes, so a short read follows.
func (d *routeCheck) checkHandshake(ctx context.Context, name, hostport string) bool {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(hostport, "443")
	}
	roots, err := d.roots()
	if err != nil {
		d.step(name, Fail, err.Error(), "give a PEM bundle in tls.ca_file")
		return false
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: d.rc.TLS.ServerName}
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
	var verr *tls.CertificateVerificationError
	msg := err.Error()
	switch {
	case errors.As(err, &verr):
		d.step(name, Fail, "tokenproxy does not trust the server's certificate: "+verr.Err.Error(),
			"set tls.ca_file to the CA bundle that issued the server's certificate (or check tls.server_name)")
	case strings.Contains(msg, "remote error: tls:"):
		d.step(name, Fail, "the server rejected our client certificate ("+msg[strings.Index(msg, "remote error: tls:")+len("remote error: tls: "):]+")",
			"use the certificate the provider issued for this environment (sandbox and production differ), and check it is not expired or revoked")
	default:
		d.step(name, Fail, msg, "")
	}
	return false
}

func (d *routeCheck) roots() (*x509.CertPool, error) {
	if d.rc.TLS.RootCAs != nil {
		return d.rc.TLS.RootCAs, nil
	}
	if d.rc.TLS.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(d.rc.TLS.CAFile)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no PEM certificate in %s", d.rc.TLS.CAFile)
	}
	return p, nil
}

var ipRE = regexp.MustCompile(`\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:]+)\b`)

func (d *routeCheck) checkToken(ctx context.Context, r *proxy.Route) *tokencache.Token {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	start := time.Now()
	tok, err := r.Tokens.Source().Fetch(ctx, "")
	var fe *tokencache.FetchError
	switch {
	case err == nil:
		d.step("token", OK, fmt.Sprintf("obtained in %s, expires in %s", time.Since(start).Round(time.Millisecond), time.Until(tok.Expiry).Round(time.Second)), "")
		return tok
	case errors.As(err, &fe) && fe.Throttled():
		d.step("token", Warn, "the token endpoint answered 429 (throttled); retry after "+fe.RetryAfter.String(),
			"too many token requests from this IP: check that no other client shares the credentials, and lower rate_limit")
	case errors.As(err, &fe) && fe.Status == http.StatusUnauthorized:
		d.step("token", Fail, "the token endpoint rejected the username or password (HTTP 401)",
			"set token.username/password to the M2M user's credentials for this environment")
	case errors.As(err, &fe) && fe.Status == http.StatusForbidden:
		detail := "the token endpoint refused this client (HTTP 403)"
		if ip := ipRE.FindString(fe.Excerpt); ip != "" {
			detail += "; the provider saw the request come from " + ip
		}
		d.step("token", Fail, detail, "your egress IP is probably not whitelisted: ask the provider to whitelist the IP above (the gateway's egress IP, not the pod's)")
	default:
		d.step("token", Fail, err.Error(), "check token.url and that the endpoint accepts the client certificate")
	}
	return nil
}

func (d *routeCheck) checkProbe(ctx context.Context, r *proxy.Route, tok *tokencache.Token) {
	if d.rc.Check.Path == "" {
		d.step("probe", Skip, "no check.path configured", "")
		return
	}
	u := *r.Upstream
	ref, err := url.Parse(d.rc.Check.Path)
	if err != nil {
		d.step("probe", Fail, "check.path: "+err.Error(), "")
		return
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + ref.Path
	u.RawQuery = ref.RawQuery
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	req.Header.Set("Accept", "application/json")
	if tok != nil {
		req.Header.Set("Authorization", tok.Header)
	}
	if r.Signer != nil {
		if err := r.Signer.Sign(req, nil); err != nil {
			d.step("probe", Fail, "signing: "+err.Error(), "")
			return
		}
	}
	resp, err := r.Transport.RoundTrip(req)
	if err != nil {
		d.step("probe", Fail, err.Error(), "")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	what := "GET " + ref.Path
	switch {
	case resp.StatusCode < 300:
		d.step("probe", OK, fmt.Sprintf("%s -> %d (%d bytes)", what, resp.StatusCode, len(body)), "")
	case resp.StatusCode == http.StatusNotFound:
		d.step("probe", Fail, what+" -> 404", "the user has no access to accounts: ask the provider's administrator to grant the M2M user access (Banking Circle answers 404 then)")
	case resp.StatusCode == http.StatusUnauthorized:
		d.step("probe", Fail, what+" -> 401: the API did not accept the token", "check that the token endpoint and the API belong to the same environment")
	case resp.StatusCode == http.StatusForbidden:
		detail := what + " -> 403"
		if ip := ipRE.FindString(string(body)); ip != "" {
			detail += "; the provider saw the request come from " + ip
		}
		d.step("probe", Fail, detail, "your egress IP is probably not whitelisted for the API")
	default:
		d.step("probe", Warn, fmt.Sprintf("%s -> %d", what, resp.StatusCode), "")
	}
}
