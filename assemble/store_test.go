package assemble

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

func TestDecodeKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name, in, err string
	}{
		{"base64", base64.StdEncoding.EncodeToString(key), ""},
		{"base64 with newline", base64.StdEncoding.EncodeToString(key) + "\n", ""},
		{"raw url base64", base64.RawURLEncoding.EncodeToString(key), ""},
		{"hex", hex.EncodeToString(key), ""},
		{"16 bytes", base64.StdEncoding.EncodeToString(key[:16]), "16 bytes once decoded; AES-256 needs 32"},
		{"not encoded", "correct horse battery staple!", "neither base64 nor hex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeKey(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || string(got) != string(key) {
				t.Fatalf("decodeKey = %x, %v; want the key", got, err)
			}
		})
	}
}

// storeConfig is a redis store block for addr whose key is in the
// environment variable env.
func storeConfig(t *testing.T, addr, env string, key []byte) config.Store {
	t.Setenv(env, base64.StdEncoding.EncodeToString(key))
	s := config.Store{Kind: config.StoreRedis, Redis: &config.Redis{Addresses: []string{addr},
		EncryptionKey: secret.Ref{Env: env}, MaxReplicas: 3}}
	s.Redis.DialTimeout, s.Redis.ReadTimeout = 500*time.Millisecond, 500*time.Millisecond
	s.Redis.KeyPrefix, s.Redis.PollInterval, s.Redis.HealthInterval = "tp-test", 50*time.Millisecond, 100*time.Millisecond
	return s
}

func fieldPath(t *testing.T, err error) string {
	t.Helper()
	var fe *problem.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *problem.FieldError", err)
	}
	return fe.Path
}

func TestOpenStore(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	key, other := make([]byte, 32), make([]byte, 32)
	other[0] = 1

	if st, err := OpenStore(ctx, config.Store{Kind: config.StoreMemory}, StoreOptions{}); st != nil || err != nil {
		t.Fatalf("memory store: %v, %v; want nil, nil", st, err)
	}

	var ups []bool
	st, err := OpenStore(ctx, storeConfig(t, rs.Addr(), "TP_KEY_A", key), StoreOptions{OnDependency: func(up bool) { ups = append(ups, up) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(ups) != 1 || !ups[0] {
		t.Fatalf("OnDependency calls %v; want [true]", ups)
	}
	o := Options{Store: st}
	if _, ok := o.pacer("auth.example", config.RateLimit{RequestsPerMinute: 6, Burst: 2}, time.Second).(*tokencache.Limiter); ok {
		t.Fatal("with a store the pacer is the local limiter; want the shared one")
	}
	if o.tokenStore("bank", &config.Token{MaxWait: time.Second, FetchTimeout: time.Second}) == nil {
		t.Fatal("no shared token store for the route")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = OpenStore(ctx, storeConfig(t, rs.Addr(), "TP_KEY_B", other), StoreOptions{})
	if err == nil || fieldPath(t, err) != "store.redis.encryption_key" || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("another key: %v; want a store.redis.encryption_key error", err)
	}

	bad := storeConfig(t, rs.Addr(), "TP_KEY_C", other[:16])
	if _, err := OpenStore(ctx, bad, StoreOptions{}); err == nil || fieldPath(t, err) != "store.redis.encryption_key" || !strings.Contains(err.Error(), "16 bytes") {
		t.Fatalf("short key: %v", err)
	}
	bad = storeConfig(t, rs.Addr(), "TP_KEY_D", key)
	bad.Redis.TLS = &config.TLS{CAFile: filepath.Join(t.TempDir(), "missing.pem")}
	if _, err := OpenStore(ctx, bad, StoreOptions{}); err == nil || fieldPath(t, err) != "store.redis.tls.ca_file" {
		t.Fatalf("missing CA file: %v", err)
	}
}

func TestOpenStoreRefusedCredentials(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	if err := admin.ConfigSet(ctx, "requirepass", "right-password").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := storeConfig(t, rs.Addr(), "TP_KEY_E", make([]byte, 32))
	pw := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte("wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Redis.Password = secret.Ref{File: pw}
	_, err := OpenStore(ctx, cfg, StoreOptions{})
	if err == nil || fieldPath(t, err) != "store.redis.password" || !strings.Contains(err.Error(), "Redis refused the credentials") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Fatal("the error shows the password")
	}
	if err := os.WriteFile(pw, []byte("right-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(ctx, cfg, StoreOptions{})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	_ = st.Close()
}

// An unreachable Redis is not an error at start: the store starts degraded.
func TestOpenStoreUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	st, err := OpenStore(context.Background(), storeConfig(t, addr, "TP_KEY_F", make([]byte, 32)), StoreOptions{})
	if err != nil {
		t.Fatalf("unreachable Redis: %v; want a degraded store", err)
	}
	defer st.Close()
	if st.Up() || st.Healthy() == nil {
		t.Fatal("store reports healthy with Redis unreachable")
	}
	if err := st.Check(context.Background()); err == nil || fieldPath(t, err) != "store.redis.addresses" {
		t.Fatalf("Check: %v; want a store.redis.addresses error", err)
	}
}

// The least-privilege ACL of docs/shared-store.md is enough for every
// command the store sends: connect, key check, budget, lock, store, notify.
func TestOpenStoreWithDocumentedACL(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	admin := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer admin.Close()
	args := []any{"ACL", "SETUSER", "tokenproxy", "reset", "on", ">acl-password"}
	for _, f := range strings.Fields(docACL) {
		args = append(args, f)
	}
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := storeConfig(t, rs.Addr(), "TP_KEY_ACL", make([]byte, 32))
	cfg.Redis.KeyPrefix = "tokenproxy"
	t.Setenv("TP_ACL_USER", "tokenproxy")
	t.Setenv("TP_ACL_PASS", "acl-password")
	cfg.Redis.Username, cfg.Redis.Password = secret.Ref{Env: "TP_ACL_USER"}, secret.Ref{Env: "TP_ACL_PASS"}
	st, err := OpenStore(ctx, cfg, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	p := st.Pacer("auth.example", tokencache.Budget{PerMinute: 5, Burst: 2}, time.Second)
	perm, err := p.Acquire(ctx, time.Second)
	if err != nil {
		t.Fatalf("budget under the ACL: %v", err)
	}
	perm.Done()
	rt := st.Route("bank", 2*time.Second)
	tok := &tokencache.Token{Header: "Bearer x", Type: "Bearer", Expiry: time.Now().Add(time.Minute)}
	got, _, err := rt.Refresh(ctx, "", 0, func(*tokencache.Token) bool { return true }, func(context.Context) (*tokencache.Token, error) { return tok, nil })
	if err != nil || got == nil {
		t.Fatalf("refresh under the ACL: %v", err)
	}
	if !st.Up() || st.Healthy() != nil {
		t.Fatalf("store degraded under the ACL: %v", st.Healthy())
	}
}

// docACL is the ACL rule set given in docs/shared-store.md for key_prefix tokenproxy.
const docACL = `~tokenproxy:* &tokenproxy:notify +@connection +get +set +hmget +evalsha +eval +subscribe +del +hget +hset +incr +pexpire +pttl +publish +time +zadd +zcard +zrange +zremrangebyscore`

// encryption_keys: the first key seals, the others open; another key under
// an id the store knows is refused naming the field and the id.
func TestOpenStoreEncryptionKeys(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	keyA, keyB := make([]byte, 32), make([]byte, 32)
	keyA[0], keyB[0] = 0xa, 0xb
	withKeys := func(keys ...config.StoreKey) config.Store {
		s := storeConfig(t, rs.Addr(), "TP_KEYS_UNUSED", keyA)
		s.Redis.EncryptionKey, s.Redis.EncryptionKeys = secret.Ref{}, keys
		return s
	}
	t.Setenv("TP_KEYS_A", base64.StdEncoding.EncodeToString(keyA))
	t.Setenv("TP_KEYS_B", base64.StdEncoding.EncodeToString(keyB))
	a := config.StoreKey{ID: "a", Key: secret.Ref{Env: "TP_KEYS_A"}}
	b := config.StoreKey{ID: "b", Key: secret.Ref{Env: "TP_KEYS_B"}}
	for _, keys := range [][]config.StoreKey{{a}, {b, a}, {b}} {
		st, err := OpenStore(ctx, withKeys(keys...), StoreOptions{})
		if err != nil {
			t.Fatalf("keys %v: %v", keys, err)
		}
		if err := st.Check(ctx); err != nil {
			t.Fatalf("Check: %v", err)
		}
		_ = st.Close()
	}
	wrongA := config.StoreKey{ID: "a", Key: secret.Ref{Env: "TP_KEYS_B"}}
	_, err := OpenStore(ctx, withKeys(b, wrongA), StoreOptions{})
	if err == nil || fieldPath(t, err) != "store.redis.encryption_keys" || !strings.Contains(err.Error(), `encryption key "a"`) {
		t.Fatalf("another key under id a: %v; want a store.redis.encryption_keys error naming a", err)
	}
	short := config.StoreKey{ID: "c", Key: secret.Ref{Env: "TP_KEYS_SHORT"}}
	t.Setenv("TP_KEYS_SHORT", base64.StdEncoding.EncodeToString(keyA[:16]))
	if _, err := OpenStore(ctx, withKeys(b, short), StoreOptions{}); err == nil || fieldPath(t, err) != "store.redis.encryption_keys[1].key" {
		t.Fatalf("short key: %v; want store.redis.encryption_keys[1].key", err)
	}
}
