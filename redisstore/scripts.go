package redisstore

import "github.com/redis/go-redis/v9"

// The scripts keep every key of one call in one hash slot (the keys share a
// {hash tag}), so they run on Redis Cluster too. Times come from Redis TIME,
// so replicas' clocks do not matter.

// releaseScript deletes the lock only if this process still holds it.
// KEYS[1] lock; ARGV[1] owner.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// lockScript takes a credential's fetch lock and, with it, the next fencing
// generation. A new counter starts at Redis's clock in microseconds, so
// generations keep growing when Redis loses its data (a restart without
// persistence, an expired counter): a replica still holding a token from
// before never sees its own generation on a newer token.
// KEYS[1] lock, KEYS[2] generation counter; ARGV[1] owner, ARGV[2] lock TTL
// in ms, ARGV[3] counter TTL in ms. Returns the generation, or 0 when another
// process holds the lock.
var lockScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
local g = redis.call('INCR', KEYS[2])
if g == 1 then
  local t = redis.call('TIME')
  g = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%d', g))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return g`)

// storeScript writes a sealed token only if its generation is newer than
// the stored one (fencing: a writer whose lock expired cannot overwrite a
// newer token), then tells the other replicas.
// KEYS[1] token hash; ARGV[1] generation, ARGV[2] sealed value, ARGV[3] TTL
// in ms, ARGV[4] channel, ARGV[5] message. Returns 1 when written.
var storeScript = redis.NewScript(`
local g = redis.call('HGET', KEYS[1], 'gen')
if g and tonumber(g) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'val', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`)

// acquireScript is the cluster-wide budget of one authorization host: a
// sliding-window log in a sorted set whose scores are the times (ms, Redis
// clock) at which each request stops counting. A request is added with the
// latest time it can still count (send + fetch timeout + hold) and lowered
// to completion + hold when it completes (completeScript); a shared back-off
// key blocks everything after a 429.
// The epoch key tells a Redis that lost its data (and with it the window)
// from one that did not: the caller passes the epoch it last saw, and a
// different one answers {2, 0} so the caller writes its grants back first.
// KEYS[1] window, KEYS[2] back-off, KEYS[3] epoch; ARGV[1] limit, ARGV[2]
// in-flight bound in ms, ARGV[3] request id, ARGV[4] the caller's epoch.
// Returns {1, 0} when granted, {2, 0} when the epoch changed, else
// {0, ms to wait}.
var acquireScript = redis.NewScript(`
if redis.call('GET', KEYS[3]) ~= ARGV[4] then
  return {2, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local back = redis.call('PTTL', KEYS[2])
if back > 0 then
  return {0, back}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {1, 0}
end
local r = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return {0, math.max(1, tonumber(r[2]) - now)}`)

// completeScript moves a request's end of counting to completion + hold.
// KEYS[1] window; ARGV[1] hold in ms, ARGV[2] request id.
var completeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'LT', now + tonumber(ARGV[1]), ARGV[2])`)

// replayScript writes back requests this replica sent that may still count
// at the bank: those sent on its local budget while Redis was unreachable,
// and its shared grants (a Redis restarted without its data forgot them).
// An id already in the window keeps the earlier of its two end times.
// KEYS[1] window; ARGV pairs of (ms from now until it stops counting, id).
var replayScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local longest = 0
for i = 1, #ARGV, 2 do
  local d = tonumber(ARGV[i])
  redis.call('ZADD', KEYS[1], 'LT', now + d, ARGV[i + 1])
  if d > longest then longest = d end
end
if longest > 0 and redis.call('PTTL', KEYS[1]) < longest then
  redis.call('PEXPIRE', KEYS[1], longest)
end
return #ARGV / 2`)

// backoffScript extends the shared back-off to ARGV[1] ms, never shortens it.
// KEYS[1] back-off.
var backoffScript = redis.NewScript(`
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return redis.call('PTTL', KEYS[1])`)

// epochScript returns the epoch of a budget window, starting a new one
// (ARGV[1]) when Redis has none. When the caller had seen another epoch,
// Redis lost the window (a restart without its data): the new window then
// grants nothing for a quiet period (the back-off key), long enough for every
// replica to notice and write its grants back.
// KEYS[1] epoch, KEYS[2] back-off; ARGV[1] candidate, ARGV[2] the caller's
// previous epoch ("" for none), ARGV[3] quiet period in ms.
var epochScript = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  if ARGV[2] ~= '' and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  end
  return ARGV[1]
end
return e`)

// forgetScript withdraws a credential's token: it takes the next fencing
// generation (as lockScript does, so a fetch in flight under an older one
// cannot store its token afterwards: storeScript refuses it), leaves in the
// token's place a tombstone of that generation with no value, which lives
// as long as a fetch lock, and tells every replica.
// KEYS[1] token hash, KEYS[2] generation counter; ARGV[1] tombstone TTL in
// ms, ARGV[2] counter TTL in ms, ARGV[3] channel, ARGV[4] message. Returns
// how many subscribers got the message.
var forgetScript = redis.NewScript(`
local g = redis.call('INCR', KEYS[2])
if g == 1 then
  local t = redis.call('TIME')
  g = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%d', g))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', string.format('%d', g), 'val', '')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('PUBLISH', ARGV[3], ARGV[4])`)
