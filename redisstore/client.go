package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClientConfig is what configuration gives to reach Redis. One address is
// a standalone server; several are a Cluster; with MasterName they are
// Sentinels.
type ClientConfig struct {
	Addrs      []string
	MasterName string
	DB         int
	// Credentials returns the ACL username and password on every new
	// connection, so a rotated secret is picked up; nil means none.
	Credentials func(ctx context.Context) (username, password string, err error)
	// TLS, when set, encrypts the connections (a managed Redis).
	TLS *tls.Config
	// DialTimeout and ReadTimeout bound connecting and each command; they
	// also bound how long a request waits before an outage is noticed.
	DialTimeout time.Duration
	ReadTimeout time.Duration
}

// NewClient returns a redis.UniversalClient for c.
func NewClient(c ClientConfig) (redis.UniversalClient, error) {
	if len(c.Addrs) == 0 {
		return nil, errors.New("redis store: no address")
	}
	if c.DialTimeout <= 0 || c.ReadTimeout <= 0 {
		return nil, errors.New("redis store: dial and read timeouts must be positive")
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: c.Addrs, MasterName: c.MasterName, DB: c.DB, ClientName: "tokenproxy",
		CredentialsProviderContext: c.Credentials, TLSConfig: c.TLS,
		DialTimeout: c.DialTimeout, ReadTimeout: c.ReadTimeout, WriteTimeout: c.ReadTimeout,
	}), nil
}
