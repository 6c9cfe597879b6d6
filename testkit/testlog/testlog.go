// Package testlog gives tests a zap logger whose whole output is kept and,
// when the test ends, checked for secrets: a test registers the passwords,
// passcodes and tokens it used, and any of them appearing in a log line
// fails the test.
//
// The check looks at the JSON text of each line and, field by field, at the
// values as they were logged: the message of a zap.Error (and of each error
// it joins), the bytes of a zap.Binary (which the JSON shows in base64), the
// String of a zap.Stringer, the contents of objects, arrays and reflected
// values, and fields added with Logger.With. A secret is found in any of them.
package testlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
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
	values  []string // every field value of every line, flattened to text
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
	l := zap.New(c.Core())
	t.Cleanup(func() { c.Check(t) })
	return l, c
}

// Core returns a debug-level core that writes JSON lines into c and records
// every field value for Check, for tests that build their own logger (for
// example a tee with zaptest/observer).
func (c *Capture) Core() zapcore.Core {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zapcore.NewTee(zapcore.NewCore(enc, c, zapcore.DebugLevel), &fieldCore{c: c})
}

// Check fails t if the output contains any forbidden secret.
func (c *Capture) Check(t testing.TB) {
	t.Helper()
	out := c.String()
	c.mu.Lock()
	fns := append([]func() []string(nil), c.forbid...)
	values := append([]string(nil), c.values...)
	c.mu.Unlock()
	checked := 0
	for _, fn := range fns {
		for _, s := range fn() {
			if len(s) < 4 {
				continue
			}
			checked++
			if where := find(s, out, values); where != "" {
				t.Errorf("a secret appears in the log (%s; %d bytes of log); secret starts %q", where, len(out), s[:3])
			}
		}
	}
	if c.Verbose {
		t.Logf("checked %d secrets against %d bytes of log and %d field values", checked, len(out), len(values))
	}
}

// find says where secret s occurs, or "" when it does not.
func find(s, out string, values []string) string {
	for _, form := range []string{s, jsonEscape(s)} {
		if strings.Contains(out, form) {
			return "in the JSON text"
		}
	}
	for _, v := range values {
		if strings.Contains(v, s) {
			return "in a field value"
		}
	}
	return ""
}

// jsonEscape is s as a JSON string body, as zap's encoder may write it.
func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// fieldCore records the message and every field value of each entry, flattened to text.
type fieldCore struct {
	c      *Capture
	fields []zapcore.Field // from With
}

func (f *fieldCore) Enabled(zapcore.Level) bool { return true }

func (f *fieldCore) With(fields []zapcore.Field) zapcore.Core {
	return &fieldCore{c: f.c, fields: append(append([]zapcore.Field(nil), f.fields...), fields...)}
}

func (f *fieldCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, f)
}

func (f *fieldCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, fl := range append(append([]zapcore.Field(nil), f.fields...), fields...) {
		fl.AddTo(enc)
	}
	vals := []string{e.Message, e.LoggerName, e.Stack}
	vals = flatten(vals, enc.Fields, 0)
	f.c.mu.Lock()
	f.c.values = append(f.c.values, vals...)
	f.c.mu.Unlock()
	return nil
}

func (f *fieldCore) Sync() error { return nil }

// flatten appends the text of v and of everything inside it.
func flatten(out []string, v any, depth int) []string {
	if depth > 32 {
		return append(out, fmt.Sprintf("%+v", v))
	}
	switch x := v.(type) {
	case nil:
		return out
	case string:
		return append(out, x)
	case []byte:
		return append(out, string(x))
	case error:
		return append(out, x.Error(), fmt.Sprintf("%+v", x))
	case fmt.Stringer:
		return append(out, x.String())
	case map[string]any:
		for k, e := range x {
			out = flatten(append(out, k), e, depth+1)
		}
		return out
	case []any:
		for _, e := range x {
			out = flatten(out, e, depth+1)
		}
		return out
	}
	// Reflected values (zap.Any of a struct, map or slice): their Go and JSON forms.
	out = append(out, fmt.Sprintf("%+v", v))
	if rv := reflect.ValueOf(v); rv.Kind() != reflect.Func && rv.Kind() != reflect.Chan {
		if b, err := json.Marshal(v); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}
