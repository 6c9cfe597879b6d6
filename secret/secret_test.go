package secret

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValueNeverPrints(t *testing.T) {
	v := New("hunter2")
	outs := []string{
		v.String(), v.GoString(), fmt.Sprintf("%v %+v %#v %s %q %x", v, v, v, v, v, v),
		fmt.Sprint(struct{ P Value }{v}),
	}
	b, _ := json.Marshal(map[string]Value{"p": v})
	outs = append(outs, string(b))
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Fatalf("secret printed: %q", o)
		}
	}
	if v.Reveal() != "hunter2" {
		t.Fatal("Reveal lost the value")
	}
}

func TestRefValidate(t *testing.T) {
	tests := []struct {
		name string
		ref  Ref
		want string
	}{
		{"env", Ref{Env: "X"}, ""},
		{"file", Ref{File: "/x"}, ""},
		{"vault", Ref{Vault: &VaultRef{Path: "p", Field: "f"}}, ""},
		{"none", Ref{}, "token.password: missing"},
		{"two", Ref{Env: "X", File: "/x"}, "exactly one"},
		{"vault no field", Ref{Vault: &VaultRef{Path: "p"}}, "token.password.vault.field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ref.Validate("token.password")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSources(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pw")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TP_TEST_SECRET", "envs3cret")
	ctx := context.Background()

	fs, _ := Ref{File: p}.Open(nil)
	if v, err := fs.Get(ctx); err != nil || v.Reveal() != "s3cret" {
		t.Fatalf("file: %v %v", v.Reveal(), err)
	}
	// Rotation: a changed file is read on the next Get.
	if err := os.WriteFile(p, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, _ := fs.Get(ctx); v.Reveal() != "rotated" {
		t.Fatalf("file not re-read: %q", v.Reveal())
	}
	es, _ := Ref{Env: "TP_TEST_SECRET"}.Open(nil)
	if v, err := es.Get(ctx); err != nil || v.Reveal() != "envs3cret" {
		t.Fatalf("env: %v", err)
	}
	missing, _ := Ref{Env: "TP_TEST_UNSET_VARIABLE"}.Open(nil)
	if _, err := missing.Get(ctx); err == nil || !strings.Contains(err.Error(), "TP_TEST_UNSET_VARIABLE is not set") {
		t.Fatalf("missing env: %v", err)
	}
	if _, err := (Ref{Vault: &VaultRef{Path: "a", Field: "b"}}).Open(nil); !errors.Is(err, ErrNoVault) {
		t.Fatalf("vault without client: %v", err)
	}
	nofile, _ := Ref{File: filepath.Join(dir, "nope")}.Open(nil)
	if _, err := nofile.Get(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("missing file: %v", err)
	}
}
