package proxy

import (
	stdlog "log"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Lines from the standard library's log package (net/http's transport
// writes to the global logger, an http.Server to its ErrorLog) become JSON
// lines of the zap logger, so that every line tokenproxy writes is JSON.
// What a peer sent is never copied whole into them.

// maxStdLogLine bounds the message taken from one standard-library line.
const maxStdLogLine = 512

// unsolicitedPrefix starts the line net/http's transport logs when an
// upstream sends bytes on an idle connection; the bytes follow, quoted.
const unsolicitedPrefix = "Unsolicited response received on idle HTTP channel starting with "

// StdLog returns a standard-library logger that writes to log (for
// http.Server.ErrorLog).
func StdLog(log *zap.Logger) *stdlog.Logger {
	return stdlog.New(&stdLogWriter{log: log}, "", 0)
}

// RedirectStdLog sends the standard library's global logger to log, and
// returns a function that restores it.
func RedirectStdLog(log *zap.Logger) (restore func()) {
	flags, prefix, out := stdlog.Flags(), stdlog.Prefix(), stdlog.Writer()
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	stdlog.SetOutput(&stdLogWriter{log: log})
	return func() {
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
		stdlog.SetOutput(out)
	}
}

type stdLogWriter struct{ log *zap.Logger }

func (w *stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	lvl := zapcore.WarnLevel
	var fields []zap.Field
	switch {
	case strings.HasPrefix(msg, unsolicitedPrefix):
		// The upstream's bytes: only the start of their quoted form, and the read error.
		rest := msg[len(unsolicitedPrefix):]
		quoted, readErr := rest, ""
		if i := strings.LastIndex(rest, "; err="); i >= 0 {
			quoted, readErr = rest[:i], rest[i+len("; err="):]
		}
		msg = "the upstream sent bytes on an idle connection; the connection was closed"
		fields = append(fields, zap.String("starts_with", truncate(quoted, 32)), zap.String("read_error", truncate(readErr, 128)))
	case strings.HasPrefix(msg, "http: TLS handshake error"):
		lvl = zapcore.InfoLevel
		msg = truncate(msg, maxStdLogLine)
	case strings.HasPrefix(msg, "http: panic serving"):
		lvl = zapcore.ErrorLevel
		msg = truncate(msg, 4*maxStdLogLine) // the stack trace's start
	default:
		msg = truncate(msg, maxStdLogLine)
	}
	if ce := w.log.Check(lvl, msg); ce != nil {
		ce.Write(fields...)
	}
	return len(p), nil
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
