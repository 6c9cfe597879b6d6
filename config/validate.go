package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
)

// FieldError is a problem with one field of the configuration.
type FieldError = problem.FieldError

var routeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// validator collects the problems of one configuration.
type validator struct {
	c       *Config
	errs    []error
	addrs   map[string]string // listener address -> the field that uses it
	callers map[string]bool
	names   map[string]int    // route name -> index
	hosts   map[string]string // host -> the route that routes it
	gateway bool              // the proxy listens beyond loopback
}

func (v *validator) add(path, format string, a ...any) {
	v.errs = append(v.errs, problem.Field(path, fmt.Sprintf(format, a...)))
}

// Validate checks the whole configuration and returns every problem found,
// each a *FieldError, joined. It does not change c.
func (c *Config) Validate() error {
	v := &validator{c: c, addrs: map[string]string{}, callers: map[string]bool{}, names: map[string]int{}, hosts: map[string]string{}}
	v.top()
	v.interception()
	v.store()
	for i := range c.Routes {
		v.route(i, &c.Routes[i])
	}
	v.consents()
	v.reload()
	return errors.Join(v.errs...)
}

// checkAddr checks a listener address, which may bind beyond loopback
// only in gateway mode.
func (v *validator) checkAddr(path, addr string) {
	v.checkAddrAllowing(path, addr, v.c.Listen.AllowNonLoopback)
}

// checkAddrAllowing checks a listener address that may bind beyond
// loopback when beyondLoopback is true.
func (v *validator) checkAddrAllowing(path, addr string, beyondLoopback bool) {
	add, addrs := v.add, v.addrs
	if addr == "off" {
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		add(path, "%q is not host:port; write e.g. 127.0.0.1:8080", addr)
		return
	}
	if !isLoopback(host) && !beyondLoopback {
		add(path, "%q listens beyond loopback; set listen.allow_non_loopback: true for gateway mode (and restrict callers), or use 127.0.0.1", addr)
	}
	if other, dup := addrs[addr]; dup && port != "0" {
		add(path, "%q is also used by %s; give each listener its own port", addr, other)
	}
	addrs[addr] = path
}

// top checks the listeners, callers, logging and the vault: block's presence.
func (v *validator) top() {
	c, add, checkAddr, callers := v.c, v.add, v.checkAddr, v.callers
	checkAddr("listen.proxy", c.Listen.Proxy)
	// The admin listener carries no credential and no secret, and kubelet
	// probes and Prometheus reach it on the pod's address: it may bind beyond
	// loopback without gateway mode.
	v.checkAddrAllowing("listen.admin", c.Listen.Admin, true)
	if host, _, err := net.SplitHostPort(c.Listen.Proxy); err == nil && c.Listen.Proxy != "off" && !isLoopback(host) {
		v.gateway = true
	}
	for i, cl := range c.Callers {
		cp := fmt.Sprintf("callers[%d]", i)
		switch {
		case cl.Name == "":
			add(cp+".name", "missing; name the app, e.g. name: payments")
		case callers[cl.Name]:
			add(cp+".name", "%q is listed twice", cl.Name)
		case strings.ContainsAny(cl.Name, ": "):
			add(cp+".name", "%q must not contain ':' or spaces (it is the Basic user name)", cl.Name)
		}
		callers[cl.Name] = true
		if cl.Certificate == nil || !cl.Password.IsZero() {
			checkRef(&v.errs, cp+".password", cl.Password)
		}
	}
	if c.ShutdownGrace < 0 {
		add("shutdown_grace", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		add("log.format", "%q is not json or console", c.Log.Format)
	}

	if c.Vault == nil && c.usesVault() {
		add("vault", "missing; the configuration refers to Vault, so give the server and how to log in: vault: {address: https://vault:8200, auth: {method: kubernetes, kubernetes: {role: tokenproxy}}}")
	}
	if len(c.Routes) == 0 {
		add("routes", "no routes; add at least one, e.g. {name: bankingcircle, preset: bankingcircle-sandbox, ...}")
	}
}

// route checks routes[i].
func (v *validator) route(i int, r *Route) {
	add, checkAddr, names, hosts := v.add, v.checkAddr, v.names, v.hosts
	p := fmt.Sprintf("routes[%d]", i)
	if r.Name != "" {
		p = fmt.Sprintf("routes[%d](%s)", i, r.Name)
	}
	switch {
	case r.Name == "":
		add(p+".name", "missing; name the route, e.g. name: bankingcircle")
	case !routeName.MatchString(r.Name):
		add(p+".name", "%q must be lowercase letters, digits, - or _ (at most 63)", r.Name)
	default:
		if j, dup := names[r.Name]; dup {
			add(p+".name", "%q is also the name of routes[%d]; names must be unique", r.Name, j)
		}
		names[r.Name] = i
	}
	if r.Preset != "" {
		if _, ok := Presets[r.Preset]; !ok {
			add(p+".preset", "unknown preset %q; known presets: %s", r.Preset, strings.Join(PresetNames(), ", "))
		}
	}
	if len(r.Hosts) == 0 && r.Listen == "" {
		add(p+".hosts", "missing; list the host names apps call (or set listen: for a local port)")
	}
	for j, h := range r.Hosts {
		hp := fmt.Sprintf("%s.hosts[%d]", p, j)
		if !validHost(h) {
			add(hp, "%q is not a host name (write it without scheme, path or port)", h)
			continue
		}
		if other, dup := hosts[h]; dup {
			add(hp, "%q is also routed by %s; a host belongs to one route", h, other)
		}
		hosts[h] = p
	}
	if r.Upstream == "" && r.Preset != "" && Presets[r.Preset].Upstream == "" {
		add(p+".upstream", "missing; preset %s is for any bank of its kind: give the bank's https:// base URL", r.Preset)
	} else if r.Upstream == "" {
		add(p+".upstream", "missing; give the API's https:// base URL or a preset")
	} else if u, err := url.Parse(r.Upstream); err != nil || u.Host == "" {
		add(p+".upstream", "%q is not an absolute URL", r.Upstream)
	} else if u.Scheme != "https" {
		add(p+".upstream", "%q must be https://; tokenproxy originates TLS to the upstream", r.Upstream)
	} else if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		add(p+".upstream", "must not carry credentials, a query or a fragment")
	}
	if r.Listen != "" {
		checkAddr(p+".listen", r.Listen)
	}
	if r.MaxConnections < 0 {
		add(p+".max_connections", "must not be negative (0 takes the default, %d)", DefaultMaxConns)
	}
	if r.MaxBodyBytes < 0 {
		add(p+".max_body_bytes", "must not be negative")
	}
	if r.Timeouts.Upstream < 0 || r.Timeouts.Dial < 0 {
		add(p+".timeouts", "durations must not be negative")
	}
	validateCertBlock(&v.errs, p+".client_certificate", r.ClientCert, r.Preset)
	if r.Listen != "" {
		if host, _, err := net.SplitHostPort(r.Listen); err == nil && !isLoopback(host) && r.Allow == nil {
			add(p+".allow", "missing; route %s listens beyond loopback, so say who may use it: allow: {cidrs: [10.0.0.0/8]} and/or allow: {callers: [app]}", r.Name)
		}
	}
	if r.Allow == nil && v.gateway {
		add(p+".allow", "missing; the proxy listens beyond loopback (gateway mode), so every route must say who may use it: allow: {cidrs: [10.0.0.0/8]} and/or allow: {callers: [app]}")
	}
	v.allow(p, r.Allow)
	v.interceptRoute(p, r)
	v.signing(p, r.Signing)
	v.token(p, r.Token)
	v.frequency(p, r)
	if r.Token != nil {
		v.oauthToken(p, p+".token", r)
	} else if r.Subjects != nil {
		add(p+".subjects", "subjects are named only on token.type %s routes; remove the block", TokenAuthorizationCode)
	}
}

// allow checks a route's allow: block.
func (v *validator) allow(p string, a *Allow) {
	add, callers := v.add, v.callers
	if a != nil {
		if len(a.CIDRs) == 0 && len(a.Callers) == 0 {
			add(p+".allow", "empty; give cidrs, callers or both")
		}
		for j, cidr := range a.CIDRs {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				if _, err2 := netip.ParseAddr(cidr); err2 != nil {
					add(fmt.Sprintf("%s.allow.cidrs[%d]", p, j), "%q is not a CIDR prefix (10.0.0.0/8) or address", cidr)
				}
			}
		}
		for j, name := range a.Callers {
			if !callers[name] {
				add(fmt.Sprintf("%s.allow.callers[%d]", p, j), "%q is not defined in callers:; add {name: %s, password: {file: ...}}", name, name)
			}
		}
	}
}

// signing checks a route's signing: block (its options are the signer's to check).
func (v *validator) signing(p string, sg *Signing) {
	add := v.add
	if sg != nil {
		if sg.Profile == "" {
			add(p+".signing.profile", "missing; one of berlin-group, stet, custom, rfc9421, ob-detached-jws")
		}
		if sg.Key.Kind() == "" {
			add(p+".signing.key", "missing; the signing key and certificate (QSealC): pkcs12: {file, passcode} or pem: {cert_file, key_file}")
		} else {
			validateCertBlock(&v.errs, p+".signing.key", sg.Key, "")
		}
	}
}

// token checks a route's token: block.
func (v *validator) token(p string, t *Token) {
	add := v.add
	if t != nil {
		tp := p + ".token"
		switch t.Type {
		case TokenBasicGet:
			if t.URL == "" {
				add(tp+".url", "missing; give the authorization endpoint URL")
			} else if u, err := url.Parse(t.URL); err != nil || u.Scheme != "https" || u.Host == "" {
				add(tp+".url", "%q must be an https:// URL", t.URL)
			}
			checkRef(&v.errs, tp+".username", t.Username)
			checkRef(&v.errs, tp+".password", t.Password)
		case TokenClientCredentials, TokenAuthorizationCode: // see oauthToken
		case "":
			add(tp+".type", "missing; one of: %s", tokenTypes)
		default:
			add(tp+".type", "unknown token type %q; one of: %s", t.Type, tokenTypes)
		}
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"skew", t.Skew}, {"max_wait", t.MaxWait}, {"fetch_timeout", t.FetchTimeout}, {"default_ttl", t.DefaultTTL}} {
			if d.v < 0 {
				add(tp+"."+d.name, "must not be negative")
			}
		}
		rl := t.RateLimit
		if rl.RequestsPerMinute < 0 {
			add(tp+".rate_limit.requests_per_minute", "must be at least 1 (0 takes the default)")
		}
		if rl.Burst < 0 || (rl.RequestsPerMinute > 0 && rl.Burst > rl.RequestsPerMinute) {
			add(tp+".rate_limit.burst", "%d must be between 1 and requests_per_minute (%d)", rl.Burst, rl.RequestsPerMinute)
		}
	}
}

func checkRef(errs *[]error, path string, r secret.Ref) {
	if err := r.Validate(path); err != nil {
		*errs = append(*errs, err)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return len(h) <= 253 && hostRE.MatchString(h)
}

// validateCertBlock checks a client_certificate or signing.key block; an
// empty block is an error when the route's preset (named by preset)
// requires a client certificate.
func validateCertBlock(errs *[]error, path string, cc ClientCertificate, preset string) {
	add := func(p, format string, a ...any) {
		*errs = append(*errs, problem.Field(p, fmt.Sprintf(format, a...)))
	}
	switch cc.Kind() {
	case CertInCode:
	case "several":
		add(path, "set one of pkcs12, pem, vault_kv, vault_pki or vault_transit")
	case CertVaultKV, CertVaultPKI, CertVaultTransit:
		// Checked by the route builder's Check, which knows the Vault sources.
	case CertPKCS12:
		if cc.PKCS12.File == "" {
			add(path+".pkcs12.file", "missing; give the path of the .pfx/.p12 file")
		}
		checkRef(errs, path+".pkcs12.passcode", cc.PKCS12.Passcode)
	case CertPEM:
		if cc.PEM.CertFile == "" {
			add(path+".pem.cert_file", "missing; give the path of the PEM certificate")
		}
		if cc.PEM.KeyFile == "" {
			add(path+".pem.key_file", "missing; give the path of the PEM private key")
		}
	case "":
		switch {
		case strings.HasPrefix(preset, "bankingcircle"):
			add(path, "missing; Banking Circle requires the M2M certificate: pkcs12: {file: client.pfx, passcode: {env: PFX_PASSCODE}}")
		case Presets[preset].ClientCertificate:
			add(path, "missing; preset %s requires the client certificate (the QWAC): pem: {cert_file: qwac.crt, key_file: qwac.key} or pkcs12: {file, passcode}", preset)
		}
	}
	if cc.ReloadInterval < 0 {
		add(path+".reload_interval", "must not be negative (0 takes the default)")
	}
}

// usesVault reports whether the configuration refers to Vault anywhere.
func (c *Config) usesVault() bool {
	refs := func(cc ClientCertificate) bool {
		switch cc.Kind() {
		case CertVaultKV, CertVaultPKI, CertVaultTransit:
			return true
		case CertPKCS12:
			return cc.PKCS12.Passcode.Vault != nil
		}
		return false
	}
	for _, cl := range c.Callers {
		if cl.Password.Vault != nil {
			return true
		}
	}
	if c.Store.usesVault() {
		return true
	}
	for _, r := range c.Routes {
		if refs(r.ClientCert) || (r.Signing != nil && refs(r.Signing.Key)) {
			return true
		}
		if t := r.Token; t != nil && (t.Username.Vault != nil || t.Password.Vault != nil) {
			return true
		}
	}
	return c.oauthUsesVault()
}
