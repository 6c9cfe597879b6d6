package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// LoadFile reads, decodes, defaults and validates a configuration file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the operator names the configuration file
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML strictly (unknown keys are errors), applies presets and
// defaults, and validates.
func Parse(data []byte) (*Config, error) {
	cfg, err := Decode(data)
	if err != nil {
		return nil, err
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Decode decodes YAML strictly without applying defaults or validating.
func Decode(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("the configuration is empty; it needs at least a routes: list")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, explainYAML(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("the configuration holds more than one YAML document; keep one")
	}
	return &cfg, nil
}

var (
	reUnknown = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)
	reBadType = regexp.MustCompile("line (\\d+): cannot unmarshal !!(\\w+) `([^`]*)` into (\\S+)")
)

// block is a struct of the schema: its type and where it appears in the file.
type block struct {
	t     reflect.Type
	where string
}

// blocks maps each struct of the schema, by the name the YAML decoder gives
// it ("config.Token"), to its block, found by walking the schema from Config.
var blocks = func() map[string]block {
	m := map[string]block{}
	var walk func(t reflect.Type, where string)
	walk = func(t reflect.Type, where string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == reflect.TypeFor[time.Duration]() {
			return
		}
		if _, seen := m[t.String()]; seen {
			return
		}
		m[t.String()] = block{t: t, where: where}
		for i := 0; i < t.NumField(); i++ {
			name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			switch {
			case opts == "inline":
				walk(t.Field(i).Type, where)
			case name != "" && name != "-":
				child := name
				if where != "the top level" && !strings.HasPrefix(where, "a ") {
					child = where + "." + name
				}
				walk(t.Field(i).Type, blockName(t.Field(i).Type, child))
			}
		}
	}
	walk(reflect.TypeFor[Config](), "the top level")
	return m
}()

// blockName names a block for messages: the keys it sits under, or what one
// element of a list is.
func blockName(t reflect.Type, path string) string {
	switch {
	case t == reflect.TypeFor[[]Route]():
		return "a route"
	case t == reflect.TypeFor[[]Caller]():
		return "a caller"
	case t.String() == "secret.Ref":
		return "a secret reference"
	case t.String() == "*secret.VaultRef" || t.String() == "secret.VaultRef":
		return "a vault secret reference"
	}
	return path
}

// explainYAML rewrites the YAML decoder's messages into ones that name the
// block and the allowed keys.
func explainYAML(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("the configuration is not valid YAML: %w", err)
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := reUnknown.FindStringSubmatch(e); m != nil {
			b, ok := blocks[m[3]]
			where := b.where
			if !ok {
				where = m[3]
			}
			msg := fmt.Sprintf("line %s: unknown key %q in %s", m[1], m[2], where)
			if ok {
				msg += "; allowed keys: " + strings.Join(yamlKeys(b.t), ", ")
			}
			msgs = append(msgs, msg)
			continue
		}
		if m := reBadType.FindStringSubmatch(e); m != nil {
			want := m[4]
			switch want {
			case "time.Duration":
				want = "a duration such as 30s or 5m"
			case "int", "int64":
				want = "a whole number"
			case "bool":
				want = "true or false"
			case "[]string":
				want = "a list of strings"
			default:
				if b, ok := blocks[strings.TrimPrefix(want, "*")]; ok {
					want = "a mapping (" + b.where + ")"
				}
			}
			msgs = append(msgs, fmt.Sprintf("line %s: %q is not %s", m[1], m[3], want))
			continue
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if opts == "inline" && t.Field(i).Type.Kind() == reflect.Struct {
			keys = append(keys, yamlKeys(t.Field(i).Type)...)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
	}
	sort.Strings(keys)
	return keys
}
