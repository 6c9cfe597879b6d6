package redisstore

import (
	"context"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// redisLog routes go-redis's own messages (connection pool errors while
// Redis is unreachable) into the structured log at debug level: the store
// logs the state changes that matter (Redis lost, back) itself, and stderr
// keeps one JSON line per entry.
type redisLog struct{ log *zap.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

var setRedisLogger sync.Once

// UseLogger installs log as go-redis's logger. go-redis has one logger per
// process, so the first call wins; a process calls it once, at start-up.
func UseLogger(log *zap.Logger) {
	setRedisLogger.Do(func() { redis.SetLogger(redisLog{log: log.Named("go-redis")}) })
}
