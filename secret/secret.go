// Package secret holds secret values and the references (environment
// variable, file, Vault KV) through which the configuration names them.
//
// A Value never prints itself: String, Format, GoString and the JSON and text
// marshalers all yield "[redacted]", so a secret that slips into a log field
// or an error message stays hidden. Code that must use the secret calls Reveal.
package secret

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tokenproxy/tokenproxy/problem"
)

const redacted = "[redacted]"

// Value is a secret string that redacts itself wherever it could be printed.
type Value struct{ s string }

// New wraps s as a secret.
func New(s string) Value { return Value{s: s} }

// Reveal returns the secret itself. Call it only where the value is sent to
// the party that needs it (an Authorization header, a PKCS#12 decoder).
func (v Value) Reveal() string { return v.s }

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return v.s == "" }

// String implements fmt.Stringer and never returns the secret.
func (Value) String() string { return redacted }

// GoString implements fmt.GoStringer and never returns the secret.
func (Value) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb prints "[redacted]".
func (Value) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalJSON implements json.Marshaler and never returns the secret.
func (Value) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler and never returns the secret.
func (Value) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// VaultRef names one field of a Vault KV v2 secret.
type VaultRef struct {
	// Mount is the KV v2 mount, "secret" by default.
	Mount string `yaml:"mount,omitempty"`
	// Path is the secret's path under the mount.
	Path string `yaml:"path"`
	// Field is the key inside the secret's data.
	Field string `yaml:"field"`
}

// VaultReader reads one field of a KV v2 secret. The Vault client implements it.
type VaultReader interface {
	ReadField(ctx context.Context, mount, path, field string) (Value, error)
}

// Ref says where a secret comes from. Exactly one of its fields is set.
// Secrets are never written inline in the configuration, so a configuration
// file can be public.
type Ref struct {
	// Env names an environment variable holding the secret.
	Env string `yaml:"env,omitempty"`
	// File names a file holding the secret; one trailing newline is removed.
	File string `yaml:"file,omitempty"`
	// Vault names a field of a Vault KV v2 secret.
	Vault *VaultRef `yaml:"vault,omitempty"`
}

// IsZero reports whether the reference is unset.
func (r Ref) IsZero() bool { return r.Env == "" && r.File == "" && r.Vault == nil }

// Validate checks that exactly one source is set. path is the field's
// location in the configuration and is named in the error.
func (r Ref) Validate(path string) error {
	n := 0
	if r.Env != "" {
		n++
	}
	if r.File != "" {
		n++
	}
	if r.Vault != nil {
		n++
		if r.Vault.Path == "" {
			return problem.Field(path+".vault.path", "missing; name the KV v2 secret path, e.g. path: tokenproxy/bankingcircle")
		}
		if r.Vault.Field == "" {
			return problem.Field(path+".vault.field", "missing; name the key inside the secret, e.g. field: password")
		}
	}
	switch n {
	case 0:
		return problem.Field(path, "missing; give one of env: VARIABLE, file: /path, or vault: {path, field}")
	case 1:
		return nil
	default:
		return problem.Field(path, "set exactly one of env, file or vault")
	}
}

// Source yields the current value of a secret. Sources read their backing
// store on each call, so a rotated file or Vault secret is picked up without
// a restart.
type Source interface {
	Get(ctx context.Context) (Value, error)
	// String describes where the secret comes from, never the secret.
	String() string
}

// ErrNoVault is returned when a reference names Vault but no Vault client is configured.
var ErrNoVault = errors.New("a vault secret reference needs a top-level vault: block")

// Open returns a Source for the reference. vault may be nil when no reference names Vault.
func (r Ref) Open(vault VaultReader) (Source, error) {
	switch {
	case r.Env != "":
		return envSource(r.Env), nil
	case r.File != "":
		return fileSource(r.File), nil
	case r.Vault != nil:
		if vault == nil {
			return nil, ErrNoVault
		}
		mount := r.Vault.Mount
		if mount == "" {
			mount = "secret"
		}
		return vaultSource{r: VaultRef{Mount: mount, Path: r.Vault.Path, Field: r.Vault.Field}, v: vault}, nil
	default:
		return nil, errors.New("empty secret reference")
	}
}

// Static returns a Source that always yields v; for embedded defaults and tests.
func Static(v Value, description string) Source { return staticSource{v: v, d: description} }

type staticSource struct {
	v Value
	d string
}

func (s staticSource) Get(context.Context) (Value, error) { return s.v, nil }
func (s staticSource) String() string                     { return s.d }

type envSource string

func (e envSource) Get(context.Context) (Value, error) {
	v, ok := os.LookupEnv(string(e))
	if !ok {
		return Value{}, fmt.Errorf("environment variable %s is not set", string(e))
	}
	if v == "" {
		return Value{}, fmt.Errorf("environment variable %s is empty", string(e))
	}
	return New(v), nil
}

func (e envSource) String() string { return "env " + string(e) }

type fileSource string

func (f fileSource) Get(context.Context) (Value, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		// The path is not secret; the error from os names only the path.
		return Value{}, fmt.Errorf("reading secret file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return Value{}, fmt.Errorf("secret file %s is empty", string(f))
	}
	return New(s), nil
}

func (f fileSource) String() string { return "file " + string(f) }

type vaultSource struct {
	r VaultRef
	v VaultReader
}

func (s vaultSource) Get(ctx context.Context) (Value, error) {
	v, err := s.v.ReadField(ctx, s.r.Mount, s.r.Path, s.r.Field)
	if err != nil {
		return Value{}, fmt.Errorf("reading %s: %w", s.String(), err)
	}
	return v, nil
}

func (s vaultSource) String() string {
	return "vault " + s.r.Mount + "/" + s.r.Path + "#" + s.r.Field
}
