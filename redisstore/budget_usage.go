package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// usageScript reads the shared budget window without changing it: how
// many requests still count, and in how many milliseconds the next may go
// (0 now, -1 never). KEYS[1] window, KEYS[2] backoff; ARGV[1] limit.
var usageScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local back = redis.call('PTTL', KEYS[2])
if back < 0 then back = 0 end
local limit = tonumber(ARGV[1])
if limit <= 0 then
  return {n, -1, back}
end
local wait = 0
if n >= limit then
  local r = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', n - limit, 1)
  wait = math.max(1, tonumber(r[2]) - now)
end
return {n, math.max(wait, back), back}`)

// Usage implements tokencache.UsageReporter: the budget every replica
// shares, as the shared window counts it. While Redis is unreachable it
// reports this replica's local budget, not shared.
func (p *pacer) Usage(ctx context.Context) (tokencache.Usage, error) {
	limit, _, hold, local := p.params()
	if !p.s.Up() {
		return local.Usage(ctx)
	}
	res, err := usageScript.Run(ctx, p.s.rdb, []string{p.window, p.backoff}, limit).Int64Slice()
	if err != nil {
		return tokencache.Usage{}, fmt.Errorf("reading the shared token budget of %s: %w", p.host, err)
	}
	now := time.Now()
	u := tokencache.Usage{Used: int(res[0]), Limit: limit, Window: hold, Shared: true}
	if res[1] >= 0 {
		u.NextFree = now.Add(time.Duration(res[1]) * time.Millisecond)
	}
	if res[2] > 0 {
		u.BackoffUntil = now.Add(time.Duration(res[2]) * time.Millisecond)
	}
	return u, nil
}
