package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// accessMargin keeps a day's count beyond the day's end, so a replica whose
// clock lags still finds the count of the day it believes it is in.
const accessMargin = time.Hour

// accessScript counts one call of a consent in a bank day, unless the day's
// limit is reached: then it counts nothing, so refused calls never inflate
// the count. The key expires after the day (plus a margin).
// KEYS[1] the count; ARGV[1] limit, ARGV[2] expiry (unix seconds).
// Returns {count, 1} when counted, {count, 0} when refused.
var accessScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  return {n, 0}
end
n = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return {n, 1}`)

// TakeAccess counts one unattended call of the consent of route, owner and
// subject in the bank day day when fewer than limit are counted, and
// returns the count with it; at limit it counts nothing (taken false). Every
// replica sharing Redis shares the count: one script call decides, so
// concurrent calls over any number of replicas never take more than limit.
// The count expires an hour after expires (the day's end). An unreachable
// Redis is an error: the caller must not send the call.
func (s *Shared) TakeAccess(ctx context.Context, route, owner, subject, day string, limit int, expires time.Time) (count int, taken bool, err error) {
	key := s.accessKey(route, owner, subject, day)
	res, err := accessScript.Run(ctx, s.rdb, []string{key}, limit, expires.Add(accessMargin).Unix()).Int64Slice()
	if err != nil {
		return 0, false, fmt.Errorf("counting a consent's access in redis: %w", err)
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("counting a consent's access in redis: unexpected answer %v", res)
	}
	return int(res[0]), res[1] == 1, nil
}

// accessKey is the Redis key of one consent's count in one day. Owner and
// subject may hold ':', so each is prefixed with its length.
func (s *Shared) accessKey(route, owner, subject, day string) string {
	return s.opts.Prefix + ":access:" + route + ":" + strconv.Itoa(len(owner)) + ":" + owner + ":" +
		strconv.Itoa(len(subject)) + ":" + subject + ":" + day
}
