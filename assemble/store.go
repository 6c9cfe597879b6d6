package assemble

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/redisstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Store is the process's shared token store (store.kind: redis): one per
// process, shared by every route. Routes take their per-host Pacer and
// their per-route tokencache.Store from it.
type Store struct {
	*redisstore.Shared
	client   redis.UniversalClient
	keyField string // store.redis.encryption_key or store.redis.encryption_keys
}

// StoreOptions are what opening the store needs beyond its configuration.
type StoreOptions struct {
	// Log receives the store's state changes (Redis lost, back).
	Log *zap.Logger
	// Vault resolves vault: secret references; nil when none is configured.
	Vault *vaultsrc.Client
	// OnDependency is told when Redis becomes unreachable (false) and
	// returns (true); may be nil.
	OnDependency func(up bool)
	// Observer receives lock waits, shared hits and fencing rejections; may be nil.
	Observer redisstore.Observer
}

// OpenStore connects the shared store of cfg; it returns nil, nil for the
// memory store. A key that is not 32 bytes, a key that does not open the
// tokens already in Redis and credentials Redis refuses are errors, each a
// *problem.FieldError; an unreachable Redis is not (the store starts
// degraded and reconnects; Check reports it).
func OpenStore(ctx context.Context, cfg config.Store, o StoreOptions) (*Store, error) {
	if cfg.Kind != config.StoreRedis || cfg.Redis == nil {
		return nil, nil
	}
	rc := cfg.Redis
	vault := Options{Vault: o.Vault}.vault()
	keys, keyField, err := storeKeys(ctx, rc, vault)
	if err != nil {
		return nil, err
	}
	cc := redisstore.ClientConfig{Addrs: rc.Addresses, MasterName: rc.MasterName, DB: rc.DB,
		DialTimeout: rc.DialTimeout, ReadTimeout: rc.ReadTimeout}
	if cc.Credentials, err = storeCredentials(rc, vault); err != nil {
		return nil, err
	}
	if rc.TLS != nil {
		if cc.TLS, err = TLSConfig("store.redis", *rc.TLS, Options{}); err != nil {
			return nil, err
		}
	}
	client, err := redisstore.NewClient(cc)
	if err != nil {
		return nil, &problem.FieldError{Path: "store.redis", Err: err}
	}
	// Refused credentials are a configuration error, reported before the
	// store would log them as an outage.
	if err := client.Ping(ctx).Err(); err != nil && (redis.IsAuthError(err) || redis.IsPermissionError(err)) {
		_ = client.Close()
		return nil, StoreError(err)
	}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	shared, err := redisstore.New(ctx, redisstore.Options{
		Client: client, Keys: keys, Prefix: rc.KeyPrefix, MaxReplicas: rc.MaxReplicas,
		PollInterval: rc.PollInterval, HealthInterval: rc.HealthInterval,
		Log: log.With(zap.String("store", "redis")), OnDependency: o.OnDependency, Observer: o.Observer,
	})
	if err != nil {
		_ = client.Close()
		return nil, storeError(err, keyField)
	}
	s := &Store{Shared: shared, client: client, keyField: keyField}
	if err := shared.Healthy(); err != nil && redis.IsAuthError(err) {
		_ = s.Close()
		return nil, StoreError(err)
	}
	return s, nil
}

// Close stops the store and closes its connections; a nil Store is fine.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	return errors.Join(s.Shared.Close(), s.client.Close())
}

// Check pings Redis and opens the key check value, for `tokenproxy check`:
// nil, or the problem as StoreError describes it.
func (s *Store) Check(ctx context.Context) error {
	if err := s.Shared.Check(ctx); err != nil {
		return storeError(err, s.keyField)
	}
	return nil
}

// StoreError names the configuration field behind a store failure and how
// to fix it: a wrong encryption key, credentials Redis refuses, a missing
// permission, or Redis unreachable.
func StoreError(err error) error { return storeError(err, "store.redis.encryption_key") }

// storeError is StoreError naming keyField for a wrong key.
func storeError(err error, keyField string) error {
	var wk *redisstore.WrongKeyError
	switch {
	case errors.As(err, &wk) && wk.ID != "" && strings.HasSuffix(keyField, "s"):
		return &problem.FieldError{Path: keyField, Err: err,
			Fix: fmt.Sprintf("give key id %q the key the other replicas hold under it; a new key is listed with an id of its own (docs/shared-store.md, key rotation)", wk.ID)}
	case errors.As(err, &wk):
		return &problem.FieldError{Path: keyField, Err: err,
			Fix: "give every replica the same key; to start afresh with this one, delete the keys under store.redis.key_prefix"}
	case redis.IsAuthError(err):
		return &problem.FieldError{Path: "store.redis.password", Err: errors.New("Redis refused the credentials: " + authReason(err)),
			Fix: "check store.redis.username and store.redis.password against the Redis ACL"}
	case redis.IsPermissionError(err):
		return &problem.FieldError{Path: "store.redis.username", Err: err,
			Fix: "the ACL user needs the commands GET SET DEL EVAL EVALSHA PUBLISH SUBSCRIBE PING and the keys under store.redis.key_prefix"}
	}
	return &problem.FieldError{Path: "store.redis.addresses", Err: err,
		Fix: "check that Redis runs, the address and port, TLS (store.redis.tls) and the network policy"}
}

// authReason keeps Redis's reason without repeating the error chain.
func authReason(err error) string {
	msg := err.Error()
	for _, w := range []string{"WRONGPASS", "NOAUTH"} {
		if i := strings.Index(msg, w); i >= 0 {
			return msg[i:]
		}
	}
	return msg
}

// storeKeys reads the store's encryption_key (under id "default") or its
// encryption_keys, and names the field they came from.
func storeKeys(ctx context.Context, rc *config.Redis, vault secret.VaultReader) ([]redisstore.Key, string, error) {
	field := "store.redis.encryption_key"
	if len(rc.EncryptionKeys) > 0 {
		field = "store.redis.encryption_keys"
	}
	var keys []redisstore.Key
	for i, k := range config.StoreKeys(rc.EncryptionKey, rc.EncryptionKeys) {
		p := field
		if len(rc.EncryptionKeys) > 0 {
			p = fmt.Sprintf("%s[%d].key", field, i)
		}
		key, err := storeKey(ctx, p, k.Key, vault)
		if err != nil {
			return nil, "", err
		}
		keys = append(keys, redisstore.Key{ID: k.ID, Key: key})
	}
	return keys, field, nil
}

// storeKey reads and decodes a 32-byte encryption key (base64 or hex); p
// is its field.
func storeKey(ctx context.Context, p string, ref secret.Ref, vault secret.VaultReader) ([]byte, error) {
	src, err := ref.Open(vault)
	if err != nil {
		return nil, &problem.FieldError{Path: p, Err: err}
	}
	v, err := src.Get(ctx)
	if err != nil {
		return nil, &problem.FieldError{Path: p, Err: err, Fix: "make the secret available (" + src.String() + ")"}
	}
	key, err := decodeKey(v.Reveal())
	if err != nil {
		return nil, &problem.FieldError{Path: p, Err: err, Fix: "give 32 random bytes, base64 encoded: openssl rand -base64 32"}
	}
	return key, nil
}

// decodeKey decodes a hex or base64 (standard or URL alphabet) key of 32 bytes.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	got := -1
	for _, dec := range []func(string) ([]byte, error){
		hex.DecodeString, base64.StdEncoding.DecodeString, base64.RawStdEncoding.DecodeString,
		base64.URLEncoding.DecodeString, base64.RawURLEncoding.DecodeString,
	} {
		b, err := dec(s)
		switch {
		case err != nil:
		case len(b) == 32:
			return b, nil
		case got < 0:
			got = len(b)
		}
	}
	if got >= 0 {
		return nil, fmt.Errorf("the key is %d bytes once decoded; AES-256 needs 32", got)
	}
	return nil, errors.New("the key is neither base64 nor hex")
}

// storeCredentials checks the ACL username and password secrets once and
// returns a provider that reads them on every new connection.
func storeCredentials(rc *config.Redis, vault secret.VaultReader) (func(context.Context) (string, string, error), error) {
	if rc.Username.IsZero() && rc.Password.IsZero() {
		return nil, nil
	}
	var user, pass secret.Source
	var err error
	if !rc.Username.IsZero() {
		if user, err = rc.Username.Open(vault); err != nil {
			return nil, &problem.FieldError{Path: "store.redis.username", Err: err}
		}
	}
	if pass, err = rc.Password.Open(vault); err != nil {
		return nil, &problem.FieldError{Path: "store.redis.password", Err: err}
	}
	return func(ctx context.Context) (string, string, error) {
		var u string
		if user != nil {
			v, err := user.Get(ctx)
			if err != nil {
				return "", "", fmt.Errorf("store.redis.username: %w", err)
			}
			u = v.Reveal()
		}
		v, err := pass.Get(ctx)
		if err != nil {
			return "", "", fmt.Errorf("store.redis.password: %w", err)
		}
		return u, v.Reveal(), nil
	}, nil
}

// pacer paces token requests to host: the shared budget when a store is
// configured, else this process's limiter.
func (o Options) pacer(host string, rl config.RateLimit, fetchTimeout time.Duration) tokencache.Pacer {
	b := tokencache.Budget{PerMinute: rl.RequestsPerMinute, Burst: rl.Burst, Margin: rl.Margin}
	if o.Store != nil {
		return o.Store.Pacer(host, b, fetchTimeout)
	}
	return o.Limiters.For(host, b)
}

// tokenStore is the route's shared token store; nil (memory) without one.
func (o Options) tokenStore(route string, t *config.Token) tokencache.Store {
	if o.Store == nil {
		return nil
	}
	return o.Store.Route(route, t.MaxWait+t.FetchTimeout)
}
