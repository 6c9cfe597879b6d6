package intercept

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"generate", Config{CA: CAConfig{Generate: &GenerateConfig{WriteCertTo: "/x/ca.crt"}}}, ""},
		{"files", Config{CA: CAConfig{Files: &FileConfig{CertFile: "a", KeyFile: "b"}}, LeafTTL: time.Hour}, ""},
		{"vault", Config{CA: CAConfig{VaultPKI: &VaultPKIConfig{Role: "r"}}}, ""},
		{"none", Config{}, "interception.ca: set exactly one"},
		{"two", Config{CA: CAConfig{Generate: &GenerateConfig{WriteCertTo: "x"}, VaultPKI: &VaultPKIConfig{Role: "r"}}}, "found 2"},
		{"files without key", Config{CA: CAConfig{Files: &FileConfig{CertFile: "a"}}}, "interception.ca.files: set both"},
		{"vault without role", Config{CA: CAConfig{VaultPKI: &VaultPKIConfig{}}}, "interception.ca.vault_pki.role"},
		{"generate without path", Config{CA: CAConfig{Generate: &GenerateConfig{}}}, "interception.ca.generate.write_cert_to"},
		{"short ttl", Config{CA: CAConfig{Generate: &GenerateConfig{WriteCertTo: "x"}}, LeafTTL: time.Minute}, "interception.leaf_ttl"},
		{"negative", Config{CA: CAConfig{Generate: &GenerateConfig{WriteCertTo: "x"}}, CacheSize: -1}, "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("interception")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	root, _ := pki.NewCA("Interception Root")
	files := writeCA(t, dir, root, "pkcs8")
	tests := []struct {
		name string
		cfg  Config
		root func(i *Interceptor) []byte
	}{
		{"generate", Config{CA: CAConfig{Generate: &GenerateConfig{WriteCertTo: filepath.Join(dir, "gen.crt")}}},
			func(*Interceptor) []byte { b, _ := os.ReadFile(filepath.Join(dir, "gen.crt")); return b }},
		{"files", Config{CA: CAConfig{Files: &files}}, func(*Interceptor) []byte { return root.CertPEM() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i, err := Build(context.Background(), tc.cfg, Deps{Hosts: []string{"bank.example"}, Log: testlogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			c, err := i.Leaves.Certificate(context.Background(), "bank.example", allowOnly("bank.example"))
			if err != nil {
				t.Fatal(err)
			}
			verifyLeaf(t, c, parsePEMCert(t, string(tc.root(i))), "bank.example")
		})
	}
	if _, err := Build(context.Background(), Config{CA: CAConfig{VaultPKI: &VaultPKIConfig{Role: "r"}}}, Deps{}); err == nil || !strings.Contains(err.Error(), "no Vault connection") {
		t.Fatalf("vault_pki without Vault: %v", err)
	}
}
