package config

import (
	"slices"
	"strings"
	"testing"
)

// withFrequency is stetRoute with block (indented under the route) added.
func withFrequency(block string) string {
	return strings.Replace(stetRoute, "    token:\n", "    frequency_per_day: "+block+"\n    token:\n", 1)
}

func TestFrequencyDefaults(t *testing.T) {
	cfg, err := Parse([]byte(withFrequency("{}")))
	if err != nil {
		t.Fatal(err)
	}
	f := cfg.Routes[0].FrequencyPerDay
	if f.Limit != 4 || f.TimeZone != "Europe/Berlin" || !slices.Equal(f.Methods, []string{"GET"}) || len(f.Paths) != 0 || f.AttendedHeader != "PSU-IP-Address" {
		t.Fatalf("defaults: %+v", f)
	}
	loc, err := f.Location()
	if err != nil || loc.String() != "Europe/Berlin" {
		t.Fatalf("location %v, %v", loc, err)
	}
	cfg, err = Parse([]byte(withFrequency("{limit: 2, time_zone: Europe/Paris, methods: [get, post], paths: [/v1/accounts]}")))
	if err != nil {
		t.Fatal(err)
	}
	if f := cfg.Routes[0].FrequencyPerDay; f.Limit != 2 || f.TimeZone != "Europe/Paris" || !slices.Equal(f.Methods, []string{"GET", "POST"}) {
		t.Fatalf("given: %+v", f)
	}
}

func TestFrequencyErrors(t *testing.T) {
	vaultKV := "    vault_kv: {path: tokenproxy/consents}\nvault: {address: https://vault:8200, auth: {method: token, token: {env: VAULT_TOKEN}}}\n"
	onVault := strings.Replace(withFrequency("{}"), "    bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}\n", vaultKV, 1)
	redis := "store: {kind: redis, redis: {addresses: ['redis:6379'], encryption_key: {env: K}, max_replicas: 3}}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"negative limit", withFrequency("{limit: -1}"), "routes[0](bpce).frequency_per_day.limit: -1 must be at least 1"},
		{"unknown zone", withFrequency("{time_zone: Europe/Atlantis}"), `routes[0](bpce).frequency_per_day.time_zone: "Europe/Atlantis" is not a time zone`},
		{"bad method", withFrequency("{methods: ['GET /x']}"), "frequency_per_day.methods[0]"},
		{"relative path", withFrequency("{paths: [v1/accounts]}"), "frequency_per_day.paths[0]: \"v1/accounts\" must be a path prefix"},
		{"bad header", withFrequency("{attended_header: 'PSU IP'}"), "frequency_per_day.attended_header"},
		{"not per customer", strings.Replace(withFrequency("{}"), "type: authorization_code", "type: client_credentials", 1), "frequency_per_day: counts calls per customer consent, so it needs token.type authorization_code"},
		{"vault kv without redis", onVault, "frequency_per_day: the count of calls needs store.kind: redis or a bbolt or postgres consent store; Vault KV keeps no counters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
		})
	}
	// Vault KV with Redis counts in Redis: accepted.
	if _, err := Parse([]byte(redis + onVault)); err != nil && strings.Contains(err.Error(), "frequency_per_day") {
		t.Fatalf("vault kv with redis: %v", err)
	}
}
