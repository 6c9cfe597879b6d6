package config

import (
	"strings"
	"testing"
)

const redisStore = `
store:
  kind: redis
  redis:
    addresses: [127.0.0.1:6379]
    encryption_key: {env: TOKENPROXY_STORE_KEY}
    max_replicas: 3
`

func TestStoreDefaults(t *testing.T) {
	cfg, err := Parse([]byte(bankingCircle))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Kind != StoreMemory || cfg.Store.Redis != nil {
		t.Fatalf("store = %+v; want memory", cfg.Store)
	}
	if m := cfg.Routes[0].Token.RateLimit.Margin; m != DefaultRateMargin {
		t.Fatalf("rate_limit.margin = %v; want %v", m, DefaultRateMargin)
	}
	cfg, err = Parse([]byte(bankingCircle + redisStore))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Store.Redis
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"dial_timeout", r.DialTimeout, DefaultRedisDialTimeout},
		{"read_timeout", r.ReadTimeout, DefaultRedisReadTimeout},
		{"key_prefix", r.KeyPrefix, DefaultRedisKeyPrefix},
		{"poll_interval", r.PollInterval, DefaultRedisPollInterval},
		{"health_interval", r.HealthInterval, DefaultRedisHealthInterval},
		{"max_replicas", r.MaxReplicas, 3},
	} {
		if c.got != c.want {
			t.Errorf("store.redis.%s = %v; want %v", c.name, c.got, c.want)
		}
	}
}

func TestStoreErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown kind", "store: {kind: etcd}\n", []string{`store.kind: "etcd" is not memory or redis`}},
		{"redis without block", "store: {kind: redis}\n", []string{"store.redis: missing", "encryption_key"}},
		{"block without kind", "store: {redis: {addresses: [a:1]}}\n", []string{"store.redis: set but store.kind is memory"}},
		{"bad address", strings.Replace(redisStore, "127.0.0.1:6379", "redis", 1), []string{`store.redis.addresses[0]: "redis" is not host:port`}},
		{"bad port", strings.Replace(redisStore, "127.0.0.1:6379", "redis:http", 1), []string{`store.redis.addresses[0]: "redis:http" is not host:port`}},
		{"no address", strings.Replace(redisStore, "addresses: [127.0.0.1:6379]", "addresses: []", 1), []string{"store.redis.addresses: missing"}},
		{"missing key", strings.Replace(redisStore, "    encryption_key: {env: TOKENPROXY_STORE_KEY}\n", "", 1), []string{"store.redis.encryption_key: missing", "openssl rand -base64 32"}},
		{"two key sources", strings.Replace(redisStore, "{env: TOKENPROXY_STORE_KEY}", "{env: K, file: /k}", 1), []string{"store.redis.encryption_key: set exactly one"}},
		{"no max_replicas", strings.Replace(redisStore, "    max_replicas: 3\n", "", 1), []string{"store.redis.max_replicas: missing", "floor(requests_per_minute / max_replicas)"}},
		{"username without password", redisStore + "    username: {env: RU}\n", []string{"store.redis.password: missing; an ACL username needs its password"}},
		{"prefix with braces", redisStore + "    key_prefix: \"{tp}\"\n", []string{"store.redis.key_prefix", "braces"}},
		{"db on a cluster", strings.Replace(redisStore, "[127.0.0.1:6379]", "[a:1, b:2]", 1) + "    db: 2\n", []string{"store.redis.db: a Redis Cluster"}},
		{"negative timeout", redisStore + "    read_timeout: -1s\n", []string{"store.redis.read_timeout: must be positive"}},
		{"unknown key", redisStore + "    adresses: [x:1]\n", []string{`unknown key "adresses"`}},
		{"key and keys", redisStore + "    encryption_keys: [{id: b, key: {env: K2}}]\n", []string{"store.redis: give encryption_key or encryption_keys, not both"}},
		{"keys id missing", keysStore("[{key: {env: K2}}]"), []string{`store.redis.encryption_keys[0].id: "" must be 1 to 32`}},
		{"keys id too long", keysStore("[{id: " + strings.Repeat("x", 33) + ", key: {env: K2}}]"), []string{"store.redis.encryption_keys[0].id", "must be 1 to 32"}},
		{"keys id with a space", keysStore("[{id: 'a b', key: {env: K2}}]"), []string{`store.redis.encryption_keys[0].id: "a b" must be 1 to 32 letters, digits and . _ -`}},
		{"keys id twice", keysStore("[{id: b, key: {env: K2}}, {id: b, key: {env: K}}]"), []string{`store.redis.encryption_keys[1].id: "b" is listed twice`}},
		{"keys key missing", keysStore("[{id: b}]"), []string{"store.redis.encryption_keys[0].key: missing"}},
		{"keys key two sources", keysStore("[{id: b, key: {env: K, file: /k}}]"), []string{"store.redis.encryption_keys[0].key: set exactly one"}},
		{"keys unknown field", keysStore("[{id: b, secret: {env: K}}]"), []string{`unknown key "secret"`}},
		{"vault keys without vault", keysStore("[{id: b, key: {env: K}}, {id: a, key: {vault: {path: tp/store, field: key}}}]"), []string{"vault: missing"}},
		{"negative margin", bankingCircle + "      rate_limit: {margin: -1s}\n", []string{"token.rate_limit.margin: must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			y := tc.yaml
			if !strings.Contains(y, "routes:") {
				y = bankingCircle + y
			}
			_, err := Parse([]byte(y))
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

// keysStore is redisStore with encryption_keys: list instead of its key.
func keysStore(list string) string {
	return strings.Replace(redisStore, "encryption_key: {env: TOKENPROXY_STORE_KEY}", "encryption_keys: "+list, 1)
}

func TestStoreEncryptionKeys(t *testing.T) {
	cfg, err := Parse([]byte(bankingCircle + keysStore("[{id: '2026-12', key: {env: K2}}, {id: default, key: {env: TOKENPROXY_STORE_KEY}}]")))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Store.Redis
	if ks := StoreKeys(r.EncryptionKey, r.EncryptionKeys); len(ks) != 2 || ks[0].ID != "2026-12" || ks[0].Key.Env != "K2" || ks[1].ID != DefaultStoreKeyID {
		t.Fatalf("keys: %+v", ks)
	}
	cfg, err = Parse([]byte(bankingCircle + redisStore))
	if err != nil {
		t.Fatal(err)
	}
	r = cfg.Store.Redis
	if ks := StoreKeys(r.EncryptionKey, r.EncryptionKeys); len(ks) != 1 || ks[0].ID != DefaultStoreKeyID || ks[0].Key.Env != "TOKENPROXY_STORE_KEY" {
		t.Fatalf("encryption_key alone: %+v", ks)
	}
}

func TestStoreVaultRefNeedsVault(t *testing.T) {
	y := bankingCircle + strings.Replace(redisStore, "{env: TOKENPROXY_STORE_KEY}", "{vault: {path: tp/store, field: key}}", 1)
	_, err := Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), "vault: missing") {
		t.Fatalf("err = %v; want the vault block to be required", err)
	}
}
