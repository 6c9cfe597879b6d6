package config

import (
	"fmt"
	"time"
)

// Interception defaults.
const (
	DefaultLeafTTL          = 24 * time.Hour
	DefaultLeafCacheSize    = 1000
	DefaultLeafIssueRate    = 10 // leaf certificates issued per second
	DefaultLeafIssueBurst   = 20
	DefaultCAPollInterval   = 5 * time.Minute
	DefaultCAReloadInterval = 30 * time.Second
)

// Interception is the top-level interception: block: the CA whose leaf
// certificates tokenproxy presents to apps inside CONNECT tunnels to hosts
// of routes with intercept: true. Required when a route intercepts.
//
//	interception:
//	  ca:
//	    generate: {write_cert_to: /var/run/tokenproxy/ca.crt}
//	  leaf_ttl: 24h
type Interception struct {
	CA InterceptionCA `yaml:"ca"`
	// LeafTTL is the lifetime of a host certificate (at least 10m).
	LeafTTL time.Duration `yaml:"leaf_ttl"`
	// CacheSize bounds the cached host certificates.
	CacheSize int `yaml:"cache_size"`
	// IssueRate and IssueBurst bound how fast new host certificates are issued (per second).
	IssueRate  float64 `yaml:"issue_rate"`
	IssueBurst int     `yaml:"issue_burst"`
	// PollInterval is how often a vault_pki CA's issuer is checked.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// InterceptionCA names where the interception CA comes from: exactly one field.
type InterceptionCA struct {
	Files    *InterceptionFiles    `yaml:"files"`
	VaultPKI *InterceptionVaultPKI `yaml:"vault_pki"`
	Generate *InterceptionGenerate `yaml:"generate"`
}

// InterceptionFiles is a CA certificate and key in PEM files, reloaded on change.
type InterceptionFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ReloadInterval is how often the files are checked for a rotation.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// InterceptionVaultPKI signs host certificates with a Vault PKI role; the CA key stays in Vault.
type InterceptionVaultPKI struct {
	Mount string `yaml:"mount"`
	Role  string `yaml:"role"`
}

// InterceptionGenerate makes a fresh CA per process and writes its
// certificate (never its key) where the app's container reads it.
type InterceptionGenerate struct {
	WriteCertTo string `yaml:"write_cert_to"`
}

// ProxyTLS makes the forward-proxy listener speak TLS (an HTTPS proxy):
// listen.proxy_tls. With ClientCAFile, callers may authenticate by client
// certificate (callers[].certificate).
type ProxyTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
	// ReloadInterval is how often the server certificate files are checked.
	ReloadInterval time.Duration `yaml:"reload_interval"`
}

// CallerCertificate identifies a caller by its client certificate on a
// proxy_tls listener: a subject (common name, or a full RFC 4514 DN) or a
// SPIFFE ID; exactly one.
type CallerCertificate struct {
	Subject  string `yaml:"subject"`
	SPIFFEID string `yaml:"spiffe_id"`
}

// Intercepts reports whether any route intercepts CONNECT tunnels.
func (c *Config) Intercepts() bool {
	for _, r := range c.Routes {
		if r.Intercept {
			return true
		}
	}
	return false
}

func (ic *Interception) applyDefaults() {
	if ic.LeafTTL == 0 {
		ic.LeafTTL = DefaultLeafTTL
	}
	if ic.CacheSize == 0 {
		ic.CacheSize = DefaultLeafCacheSize
	}
	if ic.IssueRate == 0 {
		ic.IssueRate = DefaultLeafIssueRate
	}
	if ic.IssueBurst == 0 {
		ic.IssueBurst = DefaultLeafIssueBurst
	}
	if ic.PollInterval == 0 {
		ic.PollInterval = DefaultCAPollInterval
	}
	if f := ic.CA.Files; f != nil && f.ReloadInterval == 0 {
		f.ReloadInterval = DefaultCAReloadInterval
	}
}

func (pt *ProxyTLS) applyDefaults() {
	if pt.ReloadInterval == 0 {
		pt.ReloadInterval = DefaultReload
	}
}

// interception checks the interception: and listen.proxy_tls blocks and
// the callers' certificate blocks.
func (v *validator) interception() {
	c, add := v.c, v.add
	ic := c.Interception
	switch {
	case ic == nil && c.Intercepts():
		add("interception", "missing; a route has intercept: true, so name the CA that signs the certificates apps see: interception: {ca: {generate: {write_cert_to: /var/run/tokenproxy/ca.crt}}}")
	case ic != nil:
		n := 0
		if f := ic.CA.Files; f != nil {
			n++
			if f.CertFile == "" || f.KeyFile == "" {
				add("interception.ca.files", "set both cert_file and key_file (PEM; the key may be PKCS#8, PKCS#1 or EC)")
			}
			if f.ReloadInterval < 0 {
				add("interception.ca.files.reload_interval", "must not be negative (0 takes the default)")
			}
		}
		if p := ic.CA.VaultPKI; p != nil {
			n++
			if p.Role == "" {
				add("interception.ca.vault_pki.role", "missing; name the PKI role that signs interception certificates, e.g. role: tokenproxy-intercept")
			}
			if c.Vault == nil {
				add("vault", "missing; interception.ca.vault_pki signs with Vault, so give the server and how to log in")
			}
		}
		if g := ic.CA.Generate; g != nil {
			n++
			if g.WriteCertTo == "" {
				add("interception.ca.generate.write_cert_to", "missing; give a path the app's container mounts, e.g. /var/run/tokenproxy/ca.crt")
			}
		}
		if n != 1 {
			add("interception.ca", "set exactly one of files, vault_pki or generate (found %d)", n)
		}
		if ic.LeafTTL < 0 || ic.LeafTTL > 0 && ic.LeafTTL < 10*time.Minute {
			add("interception.leaf_ttl", "%v is too short; use at least 10m (default 24h)", ic.LeafTTL)
		}
		if ic.CacheSize < 0 || ic.IssueRate < 0 || ic.IssueBurst < 0 || ic.PollInterval < 0 {
			add("interception", "cache_size, issue_rate, issue_burst and poll_interval must not be negative (0 takes the default)")
		}
	}
	if pt := c.Listen.ProxyTLS; pt != nil {
		if pt.CertFile == "" || pt.KeyFile == "" {
			add("listen.proxy_tls", "set both cert_file and key_file (PEM): the proxy listener's server certificate")
		}
		if c.Listen.Proxy == "off" {
			add("listen.proxy_tls", "the proxy listener is off; remove proxy_tls or set listen.proxy")
		}
	}
	for i, cl := range c.Callers {
		cp := fmt.Sprintf("callers[%d]", i)
		cc := cl.Certificate
		if cc == nil {
			continue
		}
		if (cc.Subject == "") == (cc.SPIFFEID == "") {
			add(cp+".certificate", "set exactly one of subject (CN or RFC 4514 DN) or spiffe_id")
		}
		if c.Listen.ProxyTLS == nil || c.Listen.ProxyTLS.ClientCAFile == "" {
			add(cp+".certificate", "client certificates are only read on a TLS proxy listener; set listen.proxy_tls with client_ca_file")
		}
	}
}

// interceptRoute checks an intercepting route: it needs hosts to intercept.
func (v *validator) interceptRoute(p string, r *Route) {
	if r.Intercept && len(r.Hosts) == 0 {
		v.add(p+".intercept", "route %s intercepts but names no hosts; add hosts: [the host apps call with https://]", r.Name)
	}
}
