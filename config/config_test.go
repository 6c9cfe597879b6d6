package config

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

const bankingCircle = `
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    client_certificate:
      pkcs12: {file: /etc/tokenproxy/client.pfx, passcode: {env: BC_PFX_PASSCODE}}
    token:
      username: {env: BC_USERNAME}
      password: {file: /etc/tokenproxy/password}
`

func TestBankingCirclePreset(t *testing.T) {
	cfg, err := Parse([]byte(bankingCircle))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Upstream != "https://sandbox.bankingcircleconnect.com" || r.Hosts[0] != "sandbox.bankingcircleconnect.com" {
		t.Fatalf("preset not applied: %+v", r)
	}
	if r.Token.Type != TokenBasicGet || r.Token.URL != "https://authorizationsandbox.bankingcircleconnect.com/api/v1/authorizations/authorize" {
		t.Fatalf("token preset: %+v", r.Token)
	}
	if cfg.Listen.Proxy != DefaultProxyAddr || r.Token.Skew != DefaultSkew || r.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Fatal("defaults not applied")
	}
	prod, err := Parse([]byte(strings.Replace(bankingCircle, "sandbox", "production", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if prod.Routes[0].Upstream != "https://www.bankingcircleconnect.com" ||
		prod.Routes[0].Token.URL != "https://authorization.bankingcircleconnect.com/api/v1/authorizations/authorize" {
		t.Fatalf("production preset: %+v", prod.Routes[0])
	}
}

func TestExplicitFieldsOverridePreset(t *testing.T) {
	cfg, err := Parse([]byte(bankingCircle + `
    upstream: https://127.0.0.1:8443
    hosts: [bc.internal]
    timeouts: {upstream: 5s}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Upstream != "https://127.0.0.1:8443" || r.Hosts[0] != "bc.internal" || r.Timeouts.Upstream != 5*time.Second {
		t.Fatalf("override lost: %+v", r)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty", ``, []string{"empty"}},
		{"unknown top-level key", "routs: []", []string{`line 1: unknown key "routs" in the top level`, "allowed keys: admin, callers, certificate_expiry_warning, ", "listen, log, reload, routes, shutdown_grace"}},
		{"unknown nested key", strings.Replace(bankingCircle, "username:", "user:", 1), []string{`unknown key "user" in token`, "username"}},
		{"bad duration", bankingCircle + "    timeouts: {upstream: 30x}\n", []string{`"30x" is not a duration such as 30s`}},
		{"no routes", "listen: {proxy: 127.0.0.1:8080}", []string{"routes: no routes"}},
		{"unknown preset", strings.Replace(bankingCircle, "bankingcircle-sandbox", "bc", 1), []string{"routes[0](bankingcircle).preset: unknown preset \"bc\"", "bankingcircle-production"}},
		{"missing secret", strings.Replace(bankingCircle, "      password: {file: /etc/tokenproxy/password}\n", "", 1), []string{"routes[0](bankingcircle).token.password: missing; give one of env"}},
		{"two secret sources", strings.Replace(bankingCircle, "{env: BC_USERNAME}", "{env: A, file: /b}", 1), []string{"token.username: set exactly one"}},
		{"no client cert for Banking Circle", strings.Replace(bankingCircle, "      pkcs12: {file: /etc/tokenproxy/client.pfx, passcode: {env: BC_PFX_PASSCODE}}\n", "", 1), []string{"client_certificate: missing; Banking Circle requires"}},
		{"http upstream", bankingCircle + "    upstream: http://example.com\n", []string{"must be https://"}},
		{"non-loopback listener", "listen: {proxy: 0.0.0.0:8080}\n" + bankingCircle, []string{"listen.proxy: \"0.0.0.0:8080\" listens beyond loopback", "allow_non_loopback"}},
		{"duplicate listener", "listen: {proxy: 127.0.0.1:8080, admin: 127.0.0.1:8080}\n" + bankingCircle, []string{"listen.admin", "also used by listen.proxy"}},
		{"bad host", bankingCircle + "    hosts: [\"https://x.com/\"]\n", []string{"hosts[0]: \"https://x.com/\" is not a host name"}},
		{"burst above budget", bankingCircle + "      rate_limit: {requests_per_minute: 2, burst: 5}\n", []string{"token.rate_limit.burst: 5 must be between 1 and requests_per_minute (2)"}},
		{"two documents", bankingCircle + "---\nroutes: []\n", []string{"more than one YAML document"}},
		{"duplicate names and hosts", bankingCircle + strings.TrimPrefix(bankingCircle, "\nroutes:\n"), []string{`routes[1](bankingcircle).name: "bankingcircle" is also the name of routes[0]`, "is also routed by"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestGatewayMode(t *testing.T) {
	gw := "listen: {proxy: 0.0.0.0:8080, allow_non_loopback: true}\ncallers: [{name: payments, password: {env: P}}]\n" + bankingCircle
	if _, err := Parse([]byte(gw + "    allow: {cidrs: [10.0.0.0/8], callers: [payments]}\n")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ extra, want string }{
		{"", "routes[0](bankingcircle).allow: missing; the proxy listens beyond loopback"},
		{"    allow: {callers: [billing]}\n", `allow.callers[0]: "billing" is not defined in callers:`},
		{"    allow: {cidrs: [10.0.0.0/33]}\n", `allow.cidrs[0]: "10.0.0.0/33" is not a CIDR`},
		{"    allow: {}\n", "allow: empty"},
	} {
		_, err := Parse([]byte(gw + tc.extra))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%q: %v; want %q", tc.extra, err, tc.want)
		}
	}
	// The admin listener may bind beyond loopback by itself: probes and scrapes need it.
	if _, err := Parse([]byte("listen: {admin: 0.0.0.0:9090}\n" + bankingCircle)); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(bankingCircle))
	f.Add([]byte("routes: [{name: a, hosts: [a.example], upstream: 'https://a.example'}]"))
	f.Add([]byte("listen: {proxy: ':0'}\nroutes: {}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err == nil && len(cfg.Routes) == 0 {
			t.Fatal("accepted a configuration without routes")
		}
	})
}

// Validate only reads its input: two validations of one configuration at
// once do not race (go test -race), and the configuration is unchanged.
func TestValidateDoesNotChangeItsInput(t *testing.T) {
	for _, listen := range []string{
		"listen: {proxy: 127.0.0.1:8080, admin: 0.0.0.0:9090}\ncallers: [{name: payments, password: {env: P}}]\n",
		"listen: {proxy: 0.0.0.0:8080, admin: 0.0.0.0:9090, allow_non_loopback: true}\ncallers: [{name: payments, password: {env: P}}]\n",
	} {
		t.Setenv("P", "x")
		cfg, err := Parse([]byte(listen + bankingCircle + "    allow: {callers: [payments]}\n"))
		if err != nil {
			t.Fatalf("%v\n%s", err, listen)
		}
		before := fmt.Sprintf("%+v", *cfg)
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = cfg.Validate()
			}()
		}
		wg.Wait()
		if after := fmt.Sprintf("%+v", *cfg); after != before {
			t.Fatalf("Validate changed the configuration:\nbefore %s\nafter  %s", before, after)
		}
	}
}
