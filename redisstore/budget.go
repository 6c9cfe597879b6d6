package redisstore

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Pacer returns the cluster-wide tokencache.Pacer of one authorization
// host: every replica's requests to host count against one budget b, kept
// in Redis with the promise of tokencache (see tokencache/window.go), and a
// 429 seen by any replica stops all until its Retry-After. fetchTimeout is
// the longest a token request to host may take. Routes sharing a host share
// the pacer; the smaller budget and the longer timeout apply.
func (s *Shared) Pacer(host string, b tokencache.Budget, fetchTimeout time.Duration) tokencache.Pacer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pacers[host]; ok {
		p.merge(b, fetchTimeout)
		return p
	}
	base := s.opts.Prefix + ":{budget:" + host + "}:"
	p := &pacer{s: s, host: host, window: base + "window", backoff: base + "backoff", epochKey: base + "epoch"}
	p.merge(b, fetchTimeout)
	s.pacers[host] = p
	return p
}

type pacer struct {
	s               *Shared
	host            string
	window, backoff string // Redis keys
	epochKey        string // Redis key: changes when Redis lost the window

	mu           sync.Mutex
	budget       tokencache.Budget
	fetchTimeout time.Duration
	local        *tokencache.Limiter // floor(N / MaxReplicas), while Redis is unreachable
	strikes      int
	// granted holds this replica's shared grants that may still count at
	// the bank, by id, with the local time each stops counting. A Redis
	// that comes back without its data (a restart without persistence) has
	// forgotten them; rejoin writes them back so the window stays whole.
	granted map[string]time.Time
	epoch   string // the window's epoch this replica last saw
}

func (p *pacer) merge(b tokencache.Budget, fetchTimeout time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	eff := tokencache.NewLimiter(b).Budget()
	if p.local != nil {
		eff = tokencache.Budget{PerMinute: min(eff.PerMinute, p.budget.PerMinute), Burst: min(eff.Burst, p.budget.Burst),
			Margin: max(eff.Margin, p.budget.Margin), Window: max(eff.Window, p.budget.Window)}
	}
	p.budget = eff
	p.fetchTimeout = max(p.fetchTimeout, fetchTimeout)
	lb := eff
	lb.PerMinute = eff.PerMinute / p.s.opts.MaxReplicas
	if lb.PerMinute == 0 {
		lb.PerMinute = -1 // sends nothing
	}
	p.local = tokencache.NewLimiter(lb)
}

func (p *pacer) params() (limit int, inflight, hold time.Duration, local *tokencache.Limiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	hold = p.budget.Hold()
	return p.budget.PerMinute, p.fetchTimeout + hold, hold, p.local
}

// Acquire implements tokencache.Pacer.
func (p *pacer) Acquire(ctx context.Context, maxWait time.Duration) (tokencache.Permit, error) {
	start := time.Now()
	deadline := start.Add(maxWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	waited := func(slept bool) time.Duration {
		if slept {
			return time.Since(start)
		}
		return 0
	}
	slept := false
	for range 100_000 { // every turn sleeps; the deadline ends the loop
		limit, inflight, hold, local := p.params()
		if !p.s.Up() {
			return p.acquireLocal(ctx, deadline, local, inflight, waited(slept))
		}
		id := uniqueID()
		p.mu.Lock()
		epoch := p.epoch
		p.mu.Unlock()
		res, err := acquireScript.Run(ctx, p.s.rdb, []string{p.window, p.backoff, p.epochKey}, limit, inflight.Milliseconds(), id, epoch).Int64Slice()
		if err != nil {
			if ctx.Err() != nil {
				return tokencache.Permit{}, ctx.Err()
			}
			p.s.down(err)
			continue
		}
		p.s.ok()
		if res[0] == 2 { // a new epoch: write back what may still count, then ask again
			if err := p.resync(ctx); err != nil && ctx.Err() != nil {
				return tokencache.Permit{}, ctx.Err()
			}
			continue
		}
		if res[0] == 1 {
			p.remember(id, time.Now().Add(inflight))
			return tokencache.NewPermit(waited(slept), func() { p.complete(id, hold) }), nil
		}
		wait := time.Duration(res[1]) * time.Millisecond
		if time.Now().Add(wait).After(deadline) {
			return tokencache.Permit{}, &tokencache.ThrottledError{RetryAfter: wait,
				Reason: "the cluster-wide token request budget is spent or backing off after a 429"}
		}
		// Another replica's completion can bring the slot forward: look again within a second.
		if err := backoff.Sleep(ctx, min(wait, time.Second), nil); err != nil {
			return tokencache.Permit{}, err
		}
		slept = true
	}
	return tokencache.Permit{}, &tokencache.ThrottledError{RetryAfter: time.Second, Reason: "the cluster-wide token request budget is contended"}
}

// acquireLocal paces on the local budget while Redis is unreachable, after
// every request the shared window may still count has left it.
func (p *pacer) acquireLocal(ctx context.Context, deadline time.Time, local *tokencache.Limiter, inflight time.Duration, waited time.Duration) (tokencache.Permit, error) {
	quiet := time.Unix(0, p.s.lastUp.Load()).Add(inflight)
	now := time.Now()
	if quiet.After(now) {
		if quiet.After(deadline) {
			return tokencache.Permit{}, &tokencache.ThrottledError{RetryAfter: quiet.Sub(now),
				Reason: "the shared store is unreachable; token requests resume on the local budget once the shared window has passed"}
		}
		if err := backoff.Sleep(ctx, quiet.Sub(now), nil); err != nil {
			return tokencache.Permit{}, err
		}
		waited += quiet.Sub(now)
	}
	perm, err := local.Acquire(ctx, max(time.Until(deadline), 0))
	if err != nil {
		return perm, err
	}
	if waited > 0 {
		perm = tokencache.NewPermit(waited+perm.Waited, perm.Done)
	}
	return perm, nil
}

// complete moves a request's end of counting to its completion + hold. If
// this fails, the request counts until its in-flight bound.
func (p *pacer) complete(id string, hold time.Duration) {
	p.remember(id, time.Now().Add(hold))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := completeScript.Run(ctx, p.s.rdb, []string{p.window}, hold.Milliseconds(), id).Err(); err != nil {
		p.s.log.Debug("marking a token request complete in the shared budget failed", zap.Error(err))
	}
}

// remember records that grant id counts at the bank until until (the
// earlier time wins: a completion shortens a grant's in-flight bound), and
// forgets grants that no longer count.
func (p *pacer) remember(id string, until time.Time) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.granted == nil {
		p.granted = map[string]time.Time{}
	}
	if cur, ok := p.granted[id]; !ok || until.Before(cur) {
		p.granted[id] = until
	}
	for k, u := range p.granted {
		if !u.After(now) {
			delete(p.granted, k)
		}
	}
}

// rejoin writes back to the shared window what this replica sent that may
// still count at the bank: its shared grants, under their own ids (harmless
// when Redis kept its data, essential when it lost it), and the requests it
// sent on the local budget while Redis was unreachable.
func (p *pacer) rejoin() {
	_, inflight, _, local := p.params()
	counting := local.Counting()
	now := time.Now()
	p.mu.Lock()
	args := make([]any, 0, 2*(len(counting)+len(p.granted)))
	for id, until := range p.granted {
		if d := until.Sub(now); d > 0 {
			args = append(args, strconv.FormatInt(max(d.Milliseconds(), 1), 10), id)
		}
	}
	p.mu.Unlock()
	for _, d := range counting {
		if d < 0 {
			d = inflight
		}
		args = append(args, strconv.FormatInt(max(d.Milliseconds(), 1), 10), uniqueID())
	}
	if len(args) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := replayScript.Run(ctx, p.s.rdb, []string{p.window}, args...).Err(); err != nil {
		p.s.log.Warn("adding locally sent token requests to the shared budget failed", zap.String("auth_host", p.host), zap.Error(err))
	}
}

// resync reads (or starts) the window's epoch; when it changed since this
// replica last saw it, Redis lost the window, and rejoin writes back this
// replica's grants that may still count at the bank.
func (p *pacer) resync(ctx context.Context) error {
	p.mu.Lock()
	prev := p.epoch
	p.mu.Unlock()
	quiet := 2*p.s.opts.HealthInterval + 100*time.Millisecond
	e, err := epochScript.Run(ctx, p.s.rdb, []string{p.epochKey, p.backoff}, uniqueID(), prev, quiet.Milliseconds()).Text()
	if err != nil {
		return err
	}
	p.mu.Lock()
	old := p.epoch
	p.epoch = e
	p.mu.Unlock()
	if old != "" && old != e {
		p.s.log.Warn("redis lost the shared token budget window (restarted without its data); writing back this replica's token requests",
			zap.String("auth_host", p.host))
		p.rejoin()
	}
	return nil
}

// Throttled implements tokencache.Pacer: the back-off is shared by all replicas.
func (p *pacer) Throttled(retryAfter time.Duration) time.Duration {
	p.mu.Lock()
	p.strikes++
	d := retryAfter
	if d <= 0 {
		d = tokencache.BackoffDelay(p.strikes, rand.Float64()) //nolint:gosec // jitter, not a secret
	}
	local := p.local
	p.mu.Unlock()
	d = local.Throttled(d)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if shared, err := backoffScript.Run(ctx, p.s.rdb, []string{p.backoff}, max(d.Milliseconds(), 1)).Int64(); err == nil {
		d = max(d, time.Duration(shared)*time.Millisecond)
	} else {
		p.s.log.Warn("sharing a 429 back-off failed", zap.String("auth_host", p.host), zap.Error(err))
	}
	return d
}

// Succeeded implements tokencache.Pacer.
func (p *pacer) Succeeded() {
	p.mu.Lock()
	p.strikes = 0
	local := p.local
	p.mu.Unlock()
	local.Succeeded()
}

// BackoffRemaining implements tokencache.Pacer (this replica's view).
func (p *pacer) BackoffRemaining() time.Duration {
	_, _, _, local := p.params()
	return local.BackoffRemaining()
}
