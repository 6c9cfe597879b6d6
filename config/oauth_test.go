package config

import (
	"strings"
	"testing"
	"time"
)

const stetRoute = `
routes:
  - name: bpce
    hosts: [www.13807.sandbox.api.89c3.com]
    upstream: https://www.13807.sandbox.api.89c3.com
    client_certificate: {pem: {cert_file: qwac.pem, key_file: qwac.key}}
    token:
      type: authorization_code
      url: https://www.13807.sandbox.api.89c3.com/stet/psd2/oauth/token
      client_id: PSDFR-ACPR-13807
      auth_method: tls_client_auth
      scopes: [aisp]
      authorize_url: https://www.13807.sandbox.api.89c3.com/stet/psd2/oauth/authorize
      pkce: true
      refresh_ttl: 2160h
consents:
  callback_url: https://tokenproxy.example/v1/callback
  return_urls: [https://app.example/done]
  store:
    bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}
`

func TestOAuthDefaults(t *testing.T) {
	cfg, err := Parse([]byte(stetRoute))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Subjects == nil || r.Subjects.Header != DefaultSubjectHeader || !r.Subjects.IsRequired() {
		t.Fatalf("subjects = %+v, want the default header, required", r.Subjects)
	}
	cs := cfg.Consents
	if cs.Listen != DefaultConsentListen || cs.StateTTL != DefaultStateTTL || cs.ExpiringWithin != 7*24*time.Hour || cs.CensusInterval != time.Minute {
		t.Fatalf("consents defaults: %+v", cs)
	}
	if r.Token.ClientID != "PSDFR-ACPR-13807" || !r.Token.PKCE || r.Token.RefreshTTL != 2160*time.Hour || r.Token.Scopes[0] != "aisp" {
		t.Fatalf("token: %+v", r.Token.OAuthToken)
	}
	cc := strings.Replace(stetRoute, "type: authorization_code", "type: client_credentials", 1)
	cc = cc[:strings.Index(cc, "      authorize_url")] + "    subjects: {header: X-Customer, required: false}\n"
	if _, err := Parse([]byte(cc)); err == nil || !strings.Contains(err.Error(), "subjects") {
		t.Fatalf("client_credentials with subjects: %v", err)
	}
}

func TestOAuthErrors(t *testing.T) {
	rep := func(old, repl string) string { return strings.Replace(stetRoute, old, repl, 1) }
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown auth method", rep("tls_client_auth", "mtls"), `token.auth_method: "mtls" is not one of`},
		{"secret missing", rep("tls_client_auth", "client_secret_post"), "token.client_secret: missing"},
		{"jwt without key", rep("tls_client_auth", "private_key_jwt"), "token.private_key: missing"},
		{"jwt two keys", rep("tls_client_auth", "private_key_jwt\n      private_key: {file: k.pem, vault_transit: {key: k}}"), "token.private_key: set exactly one"},
		{"authorize url", rep("authorize_url: https://", "authorize_url: http://"), "token.authorize_url"},
		{"no consents block", stetRoute[:strings.Index(stetRoute, "consents:")], "consents: missing"},
		{"no store", rep("    bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}\n", ""), "consents.store: set exactly one"},
		{"no store key", rep(", key: {env: TOKENPROXY_CONSENT_KEY}", ""), "consents.store.bbolt.key: missing"},
		{"bad callback", rep("https://tokenproxy.example/v1/callback", "/v1/callback"), "consents.callback_url"},
		{"consent listener beyond loopback", rep("consents:\n", "consents:\n  listen: 0.0.0.0:9091\n"), "consents.listen"},
		{"unknown store key", rep("bbolt: {path", "bolt: {path"), `unknown key "bolt"`},
		{"bad subject header", rep("consents:\n", "    subjects: {header: Authorization}\nconsents:\n"), "subjects.header"},
		{"vault store without vault", rep("bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}", "vault_kv: {path: tokenproxy/consents}"), "vault: missing"},
		{"consent API beyond loopback without allow", strings.Replace(rep("consents:\n", "consents:\n  listen: 0.0.0.0:9091\n"), "\nroutes:", "\nlisten: {allow_non_loopback: true}\nroutes:", 1), "routes[0](bpce).allow: missing; the consent API listens beyond loopback"},
		{"oauth fields on basic-get", rep("type: authorization_code", "type: basic-get"), "belong to type"},
		{"keep-alive too short", rep("pkce: true", "pkce: true\n      keep_alive: 1m"), "token.keep_alive: 1m0s is too short"},
		{"keep-alive on client credentials", strings.Replace(rep("pkce: true", "pkce: true\n      keep_alive: 24h"), "type: authorization_code", "type: client_credentials", 1), "keep_alive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPostgresConsentStore(t *testing.T) {
	const bolt = "bbolt: {path: /var/lib/tokenproxy/consents.db, key: {env: TOKENPROXY_CONSENT_KEY}}"
	with := func(pg string) string { return strings.Replace(stetRoute, bolt, "postgres: "+pg, 1) }
	cfg, err := Parse([]byte(with("{host: db.internal, database: tokenproxy, user: tokenproxy, password: {env: PGPASS}, key: {env: TOKENPROXY_CONSENT_KEY}}")))
	if err != nil {
		t.Fatal(err)
	}
	rot, err := Parse([]byte(with("{host: db, database: d, user: u, keys: [{id: '2026-12', key: {env: K2}}, {id: default, key: {env: K}}]}")))
	if err != nil {
		t.Fatal(err)
	}
	if ks := StoreKeys(rot.Consents.Store.Postgres.Key, rot.Consents.Store.Postgres.Keys); len(ks) != 2 || ks[0].ID != "2026-12" {
		t.Fatalf("keys: %+v", ks)
	}
	if ks := StoreKeys(cfg.Consents.Store.Postgres.Key, nil); len(ks) != 1 || ks[0].ID != DefaultStoreKeyID || ks[0].Key.Env != "TOKENPROXY_CONSENT_KEY" {
		t.Fatalf("key alone: %+v", ks)
	}
	pg := cfg.Consents.Store.Postgres
	if pg.Port != DefaultPostgresPort || pg.MaxConnections != DefaultPostgresMaxConns || pg.TLSMode() != "verify-full" || pg.MigrateOnStart {
		t.Fatalf("postgres defaults: %+v, tls mode %s", pg, pg.TLSMode())
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"two stores", strings.Replace(stetRoute, bolt, bolt+"\n    postgres: {host: db, database: d, user: u, key: {env: K}}", 1), "consents.store: set exactly one of bbolt"},
		{"no key", with("{host: db, database: d, user: u}"), "consents.store.postgres.key: missing"},
		{"no host", with("{database: d, user: u, key: {env: K}}"), "consents.store.postgres.host: missing"},
		{"password in dsn", with("{dsn: 'host=db password=hunter2', key: {env: K}}"), "consents.store.postgres.dsn: holds a password"},
		{"password in dsn url", with("{dsn: 'postgres://u:hunter2@db/d', key: {env: K}}"), "consents.store.postgres.dsn: holds a password"},
		{"dsn and host", with("{dsn: 'host=db', host: db, key: {env: K}}"), "give either dsn or host"},
		{"tls mode", with("{host: db, database: d, user: u, key: {env: K}, tls: {mode: prefer}}"), `consents.store.postgres.tls.mode: "prefer" is not one of`},
		{"max connections", with("{host: db, database: d, user: u, key: {env: K}, max_connections: -1}"), "consents.store.postgres.max_connections"},
		{"vault key without vault", with("{host: db, database: d, user: u, key: {vault: {path: tp/key, field: k}}}"), "vault: missing"},
		{"key and keys", with("{host: db, database: d, user: u, key: {env: K}, keys: [{id: b, key: {env: K2}}]}"), "consents.store.postgres: give key or keys, not both"},
		{"keys id missing", with("{host: db, database: d, user: u, keys: [{key: {env: K2}}]}"), `consents.store.postgres.keys[0].id: "" must be 1 to 32`},
		{"keys id twice", with("{host: db, database: d, user: u, keys: [{id: b, key: {env: K2}}, {id: b, key: {env: K}}]}"), `consents.store.postgres.keys[1].id: "b" is listed twice`},
		{"keys key missing", with("{host: db, database: d, user: u, keys: [{id: b}]}"), "consents.store.postgres.keys[0].key: missing"},
		{"vault keys without vault", with("{host: db, database: d, user: u, keys: [{id: b, key: {env: K}}, {id: a, key: {vault: {path: tp/key, field: k}}}]}"), "vault: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatal("the error shows the password")
			}
		})
	}
}
