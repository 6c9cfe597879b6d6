package testlog_test

import (
	"errors"
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Helper()             {}
func (r *recorder) Logf(string, ...any) {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

type stringer string

func (s stringer) String() string { return "token=" + string(s) }

type creds struct{ User, Password string }

type object struct{ secret string }

func (o object) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("inner", o.secret)
	return nil
}

const secret = "s3cr\"et/\n<pass>"

func TestCheckFindsSecretsInEveryFieldType(t *testing.T) {
	tests := []struct {
		name string
		log  func(l *zap.Logger)
	}{
		{"message", func(l *zap.Logger) { l.Info("login with " + secret) }},
		{"string", func(l *zap.Logger) { l.Info("x", zap.String("k", secret)) }},
		{"error", func(l *zap.Logger) { l.Error("x", zap.Error(fmt.Errorf("reading: %w", errors.New(secret)))) }},
		{"joined errors", func(l *zap.Logger) { l.Error("x", zap.Error(errors.Join(errors.New("a"), errors.New(secret)))) }},
		{"named error", func(l *zap.Logger) { l.Error("x", zap.NamedError("cause", errors.New(secret))) }},
		{"errors", func(l *zap.Logger) { l.Error("x", zap.Errors("causes", []error{errors.New(secret)})) }},
		{"binary", func(l *zap.Logger) { l.Info("x", zap.Binary("raw", []byte(secret))) }},
		{"byte string", func(l *zap.Logger) { l.Info("x", zap.ByteString("raw", []byte(secret))) }},
		{"stringer", func(l *zap.Logger) { l.Info("x", zap.Stringer("s", stringer(secret))) }},
		{"reflected struct", func(l *zap.Logger) { l.Info("x", zap.Any("creds", creds{"u", secret})) }},
		{"strings", func(l *zap.Logger) { l.Info("x", zap.Strings("list", []string{"a", secret})) }},
		{"object", func(l *zap.Logger) { l.Info("x", zap.Object("o", object{secret})) }},
		{"namespace", func(l *zap.Logger) { l.Info("x", zap.Namespace("ns"), zap.String("k", secret)) }},
		{"with", func(l *zap.Logger) { l.With(zap.String("k", secret)).Info("x") }},
		{"named logger", func(l *zap.Logger) { l.Named(secret).Info("x") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &testlog.Capture{} // not testlog.New: this test logs the secret on purpose
			c.ForbidStrings(secret)
			tc.log(zap.New(c.Core()))
			if c.String() == "" {
				t.Fatal("nothing captured")
			}
			rec := &recorder{}
			c.Check(rec)
			if len(rec.failures) == 0 {
				t.Fatalf("a secret logged as %s was not found in %s", tc.name, c.String())
			}
		})
	}
}

func TestCheckQuietWithoutSecrets(t *testing.T) {
	rec := &recorder{}
	l, c := testlog.New(t)
	c.ForbidStrings(secret, "abc") // "abc" is too short to check
	l.Error("reload failed", zap.Error(errors.New("wrong passcode")), zap.Binary("b", []byte("abc")))
	c.Check(rec)
	if len(rec.failures) != 0 {
		t.Fatalf("false alarm: %v", rec.failures)
	}
}
