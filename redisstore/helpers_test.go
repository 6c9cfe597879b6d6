package redisstore

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// bank is a token endpoint double shared by every replica: it numbers its
// tokens, records arrival times and, for rotating subjects, accepts each
// refresh token once (as rotating banks do: a second use is invalid_grant).
type bank struct {
	ttl   time.Duration
	setup time.Duration // from send to arrival (connection set-up)
	delay time.Duration // from arrival to the answer
	n     atomic.Int64
	retry time.Duration // when > 0, the next request is answered 429 with this Retry-After

	mu       sync.Mutex
	arrivals []time.Time
	refresh  map[string]int // subject → the refresh token the bank accepts next
	grants   map[string]int // subject → the refresh token the durable store holds
	invalid  int            // refresh tokens used twice (invalid_grant)
}

func (b *bank) Host() string { return "bank.example" }

func (b *bank) Fetch(ctx context.Context, subject string) (*tokencache.Token, error) {
	if b.setup > 0 {
		time.Sleep(b.setup)
	}
	b.mu.Lock()
	b.arrivals = append(b.arrivals, time.Now())
	if b.retry > 0 {
		d := b.retry
		b.retry = 0
		b.mu.Unlock()
		return nil, &tokencache.FetchError{Status: 429, RetryAfter: d, Reason: "429"}
	}
	sent := b.grants[subject] // the refresh token the durable store holds now
	b.mu.Unlock()
	n := b.n.Add(1)
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if subject != "" {
		b.mu.Lock()
		if sent != b.refresh[subject] {
			b.invalid++
			b.mu.Unlock()
			return nil, &tokencache.FetchError{Status: 400, Reason: "invalid_grant"}
		}
		b.refresh[subject]++ // rotated: the old one is spent
		b.grants[subject] = b.refresh[subject]
		b.mu.Unlock()
	}
	v := fmt.Sprintf("tok-%d", n)
	now := time.Now()
	return &tokencache.Token{Value: v, Type: "Bearer", Header: "Bearer " + v, Expiry: now.Add(b.ttl), Issued: now}, nil
}

func newBank(ttl, delay time.Duration) *bank {
	return &bank{ttl: ttl, delay: delay, refresh: map[string]int{}, grants: map[string]int{}}
}

func (b *bank) arrivalTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.arrivals)
}

// opCounter counts the Redis commands a client sends.
type opCounter struct{ n atomic.Int64 }

func (o *opCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (o *opCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !healthCommand(cmd) { // health checks are counted apart from token traffic
			o.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (o *opCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		o.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// healthCommand tells the health tick's commands (a PING, or reading a
// budget window's epoch) from token traffic.
func healthCommand(cmd redis.Cmder) bool {
	args := cmd.Args()
	switch cmd.Name() {
	case "ping":
		return true
	case "evalsha", "eval":
		return len(args) > 1 && args[1] == epochScript.Hash()
	}
	return false
}

type replica struct {
	log    *testlog.Capture
	shared *Shared
	cache  *tokencache.Cache
	ops    *opCounter
	client redis.UniversalClient
	deps   chan bool
}

type replicaOpts struct {
	route        string
	key          []byte
	keys         []Key // instead of key
	budget       tokencache.Budget
	maxWait      time.Duration
	fetchTimeout time.Duration
	skew         time.Duration
	maxReplicas  int
	obs          Observer
}

func newReplica(t testing.TB, srv *redistest.Server, src tokencache.Source, o replicaOpts) *replica {
	t.Helper()
	if o.route == "" {
		o.route = "bc"
	}
	if o.key == nil {
		o.key = testKey
	}
	if o.budget.PerMinute == 0 {
		o.budget = tokencache.Budget{PerMinute: 60, Burst: 60}
	}
	if o.maxWait == 0 {
		o.maxWait = 5 * time.Second
	}
	if o.fetchTimeout == 0 {
		o.fetchTimeout = 5 * time.Second
	}
	if o.maxReplicas == 0 {
		o.maxReplicas = 3
	}
	r := &replica{ops: &opCounter{}, deps: make(chan bool, 16)}
	log, capture := testlog.New(t)
	capture.ForbidStrings("tok-", string(o.key)) // every token value starts tok-
	for _, k := range o.keys {
		capture.ForbidStrings(string(k.Key))
	}
	r.log = capture
	r.client = redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs: []string{srv.Addr()}, DialTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond,
		MaxRetries: -1, Dialer: (&net.Dialer{}).DialContext,
	})
	r.client.AddHook(r.ops)
	t.Cleanup(func() { r.client.Close() })
	s, err := New(context.Background(), Options{
		Client: r.client, Key: o.key, Keys: o.keys, Prefix: "tp-test", MaxReplicas: o.maxReplicas,
		PollInterval: 50 * time.Millisecond, HealthInterval: 100 * time.Millisecond, Observer: o.obs, Log: log,
		OnDependency: func(up bool) {
			select {
			case r.deps <- up:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if up := <-r.deps; !up {
		t.Fatal("a new store reported Redis down")
	}
	r.shared = s
	c, err := tokencache.New(src, s.Pacer(src.Host(), o.budget, o.fetchTimeout), tokencache.Options{
		Route: o.route, Skew: o.skew, MaxWait: o.maxWait, FetchTimeout: o.fetchTimeout,
		Store: s.Route(o.route, o.maxWait+o.fetchTimeout), Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.cache = c
	return r
}

// storm runs n concurrent Gets spread over the replicas and returns how
// many callers saw each token.
func storm(t *testing.T, rs []*replica, subject string, n int) map[string]int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for i := range n {
		r := rs[i%len(rs)]
		wg.Go(func() {
			tok, _, err := r.cache.Get(context.Background(), subject)
			if err != nil {
				t.Errorf("Get: %v", err)
				return
			}
			mu.Lock()
			seen[tok.Value]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return seen
}

func maxInWindow(ts []time.Time, w time.Duration) int {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best := 0
	for i := range ts {
		n := 0
		for j := i; j < len(ts) && ts[j].Sub(ts[i]) < w; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

// eventually polls cond every 10 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
