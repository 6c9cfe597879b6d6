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

	"go.yaml.in/yaml/v3"

	"github.com/tokenproxy/tokenproxy/signer"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
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

// typeLabels maps the Go types of the schema to where they appear in the file.
var typeLabels = map[string]reflect.Type{
	"config.Config":              reflect.TypeFor[Config](),
	"config.Listen":              reflect.TypeFor[Listen](),
	"config.Log":                 reflect.TypeFor[Log](),
	"config.Route":               reflect.TypeFor[Route](),
	"config.TLS":                 reflect.TypeFor[TLS](),
	"config.ClientCertificate":   reflect.TypeFor[ClientCertificate](),
	"config.PKCS12":              reflect.TypeFor[PKCS12](),
	"config.PEM":                 reflect.TypeFor[PEM](),
	"config.Token":               reflect.TypeFor[Token](),
	"config.RateLimit":           reflect.TypeFor[RateLimit](),
	"config.Timeouts":            reflect.TypeFor[Timeouts](),
	"config.Check":               reflect.TypeFor[Check](),
	"config.Allow":               reflect.TypeFor[Allow](),
	"vaultsrc.Config":            reflect.TypeFor[vaultsrc.Config](),
	"vaultsrc.AuthConfig":        reflect.TypeFor[vaultsrc.AuthConfig](),
	"vaultsrc.KVCertConfig":      reflect.TypeFor[vaultsrc.KVCertConfig](),
	"vaultsrc.PKIConfig":         reflect.TypeFor[vaultsrc.PKIConfig](),
	"vaultsrc.TransitCertConfig": reflect.TypeFor[vaultsrc.TransitCertConfig](),
	"config.Caller":              reflect.TypeFor[Caller](),
	"config.Signing":             reflect.TypeFor[signingKeys](),
	"secret.Ref": reflect.TypeFor[struct {
		Env   string `yaml:"env"`
		File  string `yaml:"file"`
		Vault string `yaml:"vault"`
	}](),
	"secret.VaultRef": reflect.TypeFor[struct {
		Mount string `yaml:"mount"`
		Path  string `yaml:"path"`
		Field string `yaml:"field"`
	}](),
}

var blockNames = map[string]string{
	"config.Config": "the top level", "config.Listen": "listen", "config.Log": "log", "config.Route": "a route",
	"config.TLS": "tls", "config.ClientCertificate": "client_certificate", "config.PKCS12": "client_certificate.pkcs12",
	"config.PEM": "client_certificate.pem", "config.Token": "token", "config.RateLimit": "token.rate_limit",
	"config.Timeouts": "timeouts", "config.Check": "check", "config.Allow": "allow", "vaultsrc.Config": "vault", "vaultsrc.AuthConfig": "vault.auth",
	"vaultsrc.KVCertConfig": "vault_kv", "vaultsrc.PKIConfig": "vault_pki", "vaultsrc.TransitCertConfig": "vault_transit", "config.Caller": "a caller", "config.Signing": "signing", "secret.Ref": "a secret reference", "secret.VaultRef": "a vault secret reference",
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
			block := blockNames[m[3]]
			if block == "" {
				block = m[3]
			}
			msg := fmt.Sprintf("line %s: unknown key %q in %s", m[1], m[2], block)
			if t, ok := typeLabels[m[3]]; ok {
				msg += "; allowed keys: " + strings.Join(yamlKeys(t), ", ")
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
				if b, ok := blockNames[want]; ok {
					want = "a mapping (" + b + ")"
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

// signingKeys lists the keys of a signing: block (the inlined signer options
// and key) for error messages.
type signingKeys struct {
	signer.Options `yaml:",inline"`
	Key            string `yaml:"key"`
}
