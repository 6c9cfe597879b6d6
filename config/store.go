package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Kinds of token store.
const (
	StoreMemory = "memory"
	StoreRedis  = "redis"
)

// Defaults of the store: block and of the token budget's margin.
const (
	DefaultRedisDialTimeout    = 2 * time.Second
	DefaultRedisReadTimeout    = time.Second
	DefaultRedisKeyPrefix      = "tokenproxy"
	DefaultRedisPollInterval   = 250 * time.Millisecond
	DefaultRedisHealthInterval = time.Second
	// DefaultRateMargin lengthens the provider's minute for each token
	// request (connection set-up, clock granularity); see tokencache/window.go.
	DefaultRateMargin = 2 * time.Second
)

// Store says where tokens and the token budget live: in each process
// (memory, the default) or shared by every replica in Redis.
type Store struct {
	// Kind is memory or redis.
	Kind  string `yaml:"kind"`
	Redis *Redis `yaml:"redis"`
}

// Redis is the shared store's server and how tokens are sealed in it.
type Redis struct {
	// Addresses are host:port: one for a standalone server, several for a
	// Cluster, or the Sentinels when MasterName is set.
	Addresses  []string `yaml:"addresses"`
	MasterName string   `yaml:"master_name"`
	DB         int      `yaml:"db"`
	// Username and Password are the ACL credentials; both optional.
	Username secret.Ref `yaml:"username"`
	Password secret.Ref `yaml:"password"`
	// TLS, when present, encrypts the connection (a managed Redis).
	TLS         *TLS          `yaml:"tls"`
	DialTimeout time.Duration `yaml:"dial_timeout"`
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// EncryptionKey is 32 bytes, base64 or hex encoded, that seal tokens
	// before they reach Redis. Every replica uses the same key. Its id is
	// DefaultStoreKeyID.
	EncryptionKey secret.Ref `yaml:"encryption_key"`
	// EncryptionKeys replaces EncryptionKey to rotate keys: the first seals
	// every token written, any listed key opens the tokens sealed under its
	// id; a token sealed under an id not listed is fetched anew.
	EncryptionKeys []StoreKey `yaml:"encryption_keys"`
	// KeyPrefix starts every Redis key of this deployment.
	KeyPrefix string `yaml:"key_prefix"`
	// MaxReplicas is the most replicas that may run at once: while Redis is
	// unreachable each sends at most floor(requests_per_minute / max_replicas).
	MaxReplicas    int           `yaml:"max_replicas"`
	PollInterval   time.Duration `yaml:"poll_interval"`
	HealthInterval time.Duration `yaml:"health_interval"`
}

func (s *Store) applyDefaults() {
	if s.Kind == "" {
		s.Kind = StoreMemory
	}
	r := s.Redis
	if r == nil {
		return
	}
	if r.DialTimeout == 0 {
		r.DialTimeout = DefaultRedisDialTimeout
	}
	if r.ReadTimeout == 0 {
		r.ReadTimeout = DefaultRedisReadTimeout
	}
	if r.KeyPrefix == "" {
		r.KeyPrefix = DefaultRedisKeyPrefix
	}
	if r.PollInterval == 0 {
		r.PollInterval = DefaultRedisPollInterval
	}
	if r.HealthInterval == 0 {
		r.HealthInterval = DefaultRedisHealthInterval
	}
}

// store checks the store: block and the token budgets' margins.
func (v *validator) store() {
	s, add := v.c.Store, v.add
	for i, rt := range v.c.Routes {
		if rt.Token != nil && rt.Token.RateLimit.Margin < 0 {
			add(fmt.Sprintf("routes[%d](%s).token.rate_limit.margin", i, rt.Name), "must not be negative (0 takes the default)")
		}
	}
	switch s.Kind {
	case StoreMemory:
		if s.Redis != nil {
			add("store.redis", "set but store.kind is memory; set kind: redis to share tokens, or remove the redis block")
		}
		return
	case StoreRedis:
	default:
		add("store.kind", "%q is not memory or redis", s.Kind)
		return
	}
	r := s.Redis
	if r == nil {
		add("store.redis", "missing; kind redis needs the server and the encryption key: redis: {addresses: [redis:6379], encryption_key: {env: TOKENPROXY_STORE_KEY}, max_replicas: 3}")
		return
	}
	if len(r.Addresses) == 0 {
		add("store.redis.addresses", "missing; give host:port, e.g. [redis.tokenproxy.svc:6379]")
	}
	for i, a := range r.Addresses {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			add(fmt.Sprintf("store.redis.addresses[%d]", i), "%q is not host:port; write e.g. redis.tokenproxy.svc:6379", a)
		}
	}
	if r.DB < 0 {
		add("store.redis.db", "must not be negative")
	}
	if r.DB != 0 && len(r.Addresses) > 1 && r.MasterName == "" {
		add("store.redis.db", "a Redis Cluster (several addresses without master_name) has only db 0")
	}
	if !r.Username.IsZero() {
		checkRef(&v.errs, "store.redis.username", r.Username)
		if r.Password.IsZero() {
			add("store.redis.password", "missing; an ACL username needs its password")
		}
	}
	if !r.Password.IsZero() {
		checkRef(&v.errs, "store.redis.password", r.Password)
	}
	v.sealKeys(sealKeyFields{path: "store.redis", key: "encryption_key", keys: "encryption_keys", env: "TOKENPROXY_STORE_KEY"}, r.EncryptionKey, r.EncryptionKeys)
	if strings.ContainsAny(r.KeyPrefix, "{} \t\n") {
		add("store.redis.key_prefix", "%q must not contain braces or spaces (braces pick Redis Cluster slots)", r.KeyPrefix)
	}
	if r.MaxReplicas < 1 {
		add("store.redis.max_replicas", "missing; give the most replicas that may run at once (the deployment's replicas plus its rolling-update surge): while Redis is unreachable each replica sends at most floor(requests_per_minute / max_replicas) token requests")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial_timeout", r.DialTimeout}, {"read_timeout", r.ReadTimeout}, {"poll_interval", r.PollInterval}, {"health_interval", r.HealthInterval}} {
		if d.v <= 0 {
			add("store.redis."+d.name, "must be positive")
		}
	}
}

// usesVaultStore reports whether the store: block refers to Vault.
func (s Store) usesVault() bool {
	r := s.Redis
	return r != nil && (r.Username.Vault != nil || r.Password.Vault != nil || storeKeysUseVault(r.EncryptionKey, r.EncryptionKeys))
}
