// Package diagnose runs `tokenproxy check`: a live, step-by-step diagnosis of
// each route — files, passcode, certificate, DNS, TCP, the TLS handshake with
// the client certificate, the token fetch and a probe request — printing one
// line per step with a verdict and, when something is wrong, the fix. It
// prints no secret.
package diagnose

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/tokencache"
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
	// Build is what the routes are built with (the Vault client, in-code
	// sources); diagnose builds each route as the server would.
	Build assemble.Options
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

// path is the route's path in the configuration, for errors.
func (d *routeCheck) path() string { return fmt.Sprintf("routes[%d](%s)", d.i, d.rc.Name) }

func (d *routeCheck) run(ctx context.Context) {
	certOK := d.checkCertificate(ctx)
	up, _ := url.Parse(d.rc.Upstream)
	reachable := d.checkNetwork(ctx, "upstream", up.Host)
	if d.rc.Token != nil {
		raw := d.rc.Token.URL
		if raw == "" { // token.discovery: the endpoints are under the issuer
			raw = d.rc.Token.Issuer
		}
		u, _ := url.Parse(raw)
		if u.Host != up.Host {
			d.checkNetwork(ctx, "token endpoint", u.Host)
		}
	}
	if !certOK {
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
	bo := d.o.Build
	bo.Log, bo.Limiters = zap.NewNop(), &tokencache.Limiters{}
	rc := d.rc
	if d.cert != nil {
		// The route presents the certificate checked above: it is loaded once.
		srcs := map[string]certs.Source{}
		maps.Copy(srcs, bo.Certificates)
		srcs["diagnose:checked"] = &certs.StaticSource{Cert: d.cert, Desc: "the checked client certificate"}
		bo.Certificates = srcs
		rc.ClientCert = config.ClientCertificate{InCode: "diagnose:checked"}
	}
	if bo.Consents == nil {
		bo.Consents = assemble.ProbeConsents() // the real store may be locked by a running tokenproxy
	}
	r, err := assemble.BuildRoute(ctx, d.i, rc, bo)
	if err != nil {
		d.step("route", Fail, err.Error(), "")
		return
	}
	defer r.Transport.CloseIdleConnections()
	if d.probeOAuthRoute(ctx, r) {
		return
	}
	var tok *tokencache.Token
	if r.Tokens != nil {
		if tok = d.checkToken(ctx, r); tok == nil {
			d.step("probe", Skip, "skipped: no token", "")
			return
		}
	}
	d.checkProbe(ctx, r, tok)
}

// round shortens a duration for a report line: whole seconds from a second
// up, whole milliseconds below.
func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
