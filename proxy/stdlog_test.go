package proxy

import (
	"encoding/json"
	stdlog "log"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Lines of the standard library's logger become zap entries at a level
// that fits them; the bytes an upstream sent on an idle connection are cut
// to their start.
func TestStdLogLines(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	restore := RedirectStdLog(zap.New(core))
	junk := "HTTP/1.1 200 OK\r\nX-Account: " + strings.Repeat("s3cret", 100) + "\r\n\r\n"
	stdlog.Printf("Unsolicited response received on idle HTTP channel starting with %q; err=%v", junk, nil)
	restore()
	StdLog(zap.New(core)).Printf("http: TLS handshake error from 127.0.0.1:1: EOF")
	StdLog(zap.New(core)).Printf("http: something %s", strings.Repeat("x", 2000))
	all := logs.All()
	if len(all) != 3 {
		t.Fatalf("%d entries", len(all))
	}
	if e := all[0]; e.Level != zapcore.WarnLevel || !strings.Contains(e.Message, "idle connection") ||
		len(e.ContextMap()["starts_with"].(string)) > 40 || strings.Count(e.Message+e.ContextMap()["starts_with"].(string), "s3cret") > 1 {
		t.Fatalf("unsolicited bytes: %v %v", e.Message, e.ContextMap())
	}
	if all[1].Level != zapcore.InfoLevel || all[2].Level != zapcore.WarnLevel || len(all[2].Message) > maxStdLogLine+4 {
		t.Fatalf("levels %v %v, length %d", all[1].Level, all[2].Level, len(all[2].Message))
	}
	b, _ := json.Marshal(all[0].ContextMap())
	t.Logf("%s %s", all[0].Message, b)
}
