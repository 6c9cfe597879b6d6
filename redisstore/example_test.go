package redisstore_test

import (
	"context"
	"log"
	"time"

	"github.com/tokenproxy/tokenproxy/redisstore"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// How a route builder wires the Redis store: one Shared per process, one
// Pacer per authorization host, one Route store per route.
func Example() {
	ctx := context.Background()
	key := make([]byte, 32) // from the store's encryption key secret reference
	client, err := redisstore.NewClient(redisstore.ClientConfig{
		Addrs: []string{"127.0.0.1:6379"}, DialTimeout: time.Second, ReadTimeout: time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	shared, err := redisstore.New(ctx, redisstore.Options{
		Client: client, Key: key, Prefix: "tokenproxy", MaxReplicas: 3,
		PollInterval: 100 * time.Millisecond, HealthInterval: time.Second,
		OnDependency: func(up bool) { /* tokenproxy_dependency_up{dependency="redis"} */ },
	})
	if err != nil {
		log.Fatal(err) // a wrong encryption key, or bad options
	}
	defer shared.Close()

	var src tokencache.Source // the route's token source, e.g. *tokenclient.BasicGet
	maxWait, fetchTimeout := 10*time.Second, 30*time.Second
	budget := tokencache.Budget{PerMinute: 10, Burst: 2}
	cache, err := tokencache.New(src, shared.Pacer("auth.example", budget, fetchTimeout), tokencache.Options{
		Route: "bankingcircle", Skew: 30 * time.Second, MaxWait: maxWait, FetchTimeout: fetchTimeout,
		Store: shared.Route("bankingcircle", maxWait+fetchTimeout),
	})
	_, _ = cache, err
	// /readyz: shared.Healthy(); tokenproxy check: shared.Check(ctx).
}
