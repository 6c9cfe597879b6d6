// Package testlog gives tests a zap logger whose whole output is kept and,
// when the test ends, checked for secrets: a test registers the passwords,
// passcodes and tokens it used, and any of them appearing in a log line
// fails the test.
package testlog

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Capture holds a logger's output.
type Capture struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	forbid  []func() []string
	Verbose bool
}

// Write implements io.Writer.
func (c *Capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// Sync implements zapcore.WriteSyncer.
func (c *Capture) Sync() error { return nil }

// String returns everything logged so far.
func (c *Capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// Count returns how many log lines contain every one of the substrings.
func (c *Capture) Count(substrings ...string) int {
	n := 0
	for line := range strings.SplitSeq(c.String(), "\n") {
		ok := line != ""
		for _, s := range substrings {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// Forbid registers secrets that must never be logged. The function is
// called when the test ends, so it may return values made during the test
// (tokens an emulator issued).
func (c *Capture) Forbid(secrets func() []string) {
	c.mu.Lock()
	c.forbid = append(c.forbid, secrets)
	c.mu.Unlock()
}

// ForbidStrings registers fixed secrets.
func (c *Capture) ForbidStrings(secrets ...string) {
	c.Forbid(func() []string { return secrets })
}

// New returns a debug-level JSON logger writing into a Capture that is
// checked for forbidden secrets at the end of t.
func New(t testing.TB) (*zap.Logger, *Capture) {
	c := &Capture{}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	l := zap.New(zapcore.NewCore(enc, c, zapcore.DebugLevel))
	t.Cleanup(func() { c.Check(t) })
	return l, c
}

// Check fails t if the output contains any forbidden secret.
func (c *Capture) Check(t testing.TB) {
	t.Helper()
	out := c.String()
	c.mu.Lock()
	fns := append([]func() []string(nil), c.forbid...)
	c.mu.Unlock()
	checked := 0
	for _, fn := range fns {
		for _, s := range fn() {
			if len(s) < 4 {
				continue
			}
			checked++
			for _, form := range []string{s, jsonEscape(s)} {
				if strings.Contains(out, form) {
					t.Errorf("a secret appears in the log (%d bytes of log); secret starts %q", len(out), s[:3])
				}
			}
		}
	}
	if c.Verbose {
		t.Logf("checked %d secrets against %d bytes of log", checked, len(out))
	}
}

func jsonEscape(s string) string {
	r := strings.NewReplacer(`"`, `\"`, `\`, `\\`, "/", `\/`)
	return r.Replace(s)
}
