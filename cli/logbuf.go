package cli

import (
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/config"
)

// Log lines of `run` are written in batches: at info level there is one line
// per proxied request, and a write(2) per line to a file costs about 4 µs of
// CPU on top of the 1.7 µs that encoding it takes (a zap benchmark of the
// request line on the 2-core bench machine); batched, the write costs a few
// hundred nanoseconds. See docs/performance.md.
const (
	logBufferSize    = 64 << 10
	logFlushInterval = time.Second
)

// buildRunLogger is buildLogger for `run`: info and debug lines reach the
// output within logFlushInterval (or once logBufferSize is filled); a line at
// warn or above flushes the buffer at once, so problems show immediately and
// in order. `run` syncs the logger when it returns.
func (e *env) buildRunLogger(cfg config.Log) (*zap.Logger, error) {
	if e.logger != nil {
		return e.logger, nil
	}
	// struct{ io.Writer } hides os.File's Sync: syncing flushes the buffer,
	// it does not fsync stderr (which fails on a pipe).
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(struct{ io.Writer }{e.stderr}), Size: logBufferSize, FlushInterval: logFlushInterval}
	core, err := newCore(ws, cfg.Level, cfg.Format)
	if err != nil {
		return nil, err
	}
	return zap.New(flushingCore{Core: core, ws: ws}), nil
}

// flushingCore syncs ws after every entry at warn level or above.
type flushingCore struct {
	zapcore.Core
	ws zapcore.WriteSyncer
}

func (c flushingCore) With(fields []zapcore.Field) zapcore.Core {
	return flushingCore{Core: c.Core.With(fields), ws: c.ws}
}

func (c flushingCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c flushingCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	err := c.Core.Write(ent, fields)
	if ent.Level >= zapcore.WarnLevel {
		if serr := c.ws.Sync(); err == nil {
			err = serr
		}
	}
	return err
}
