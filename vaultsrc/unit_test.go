package vaultsrc

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/secret"
)

func TestRenewAt(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		nb, na time.Time
		jitter float64
		want   time.Time
	}{
		{name: "middle jitter is two thirds", nb: t0, na: t0.Add(90 * time.Minute), jitter: 0.5, want: t0.Add(60 * time.Minute)},
		{name: "no jitter is 7/12", nb: t0, na: t0.Add(12 * time.Hour), jitter: 0, want: t0.Add(7 * time.Hour)},
		{name: "full jitter is 3/4", nb: t0, na: t0.Add(12 * time.Hour), jitter: 1, want: t0.Add(9 * time.Hour)},
		{name: "jitter below range is clamped", nb: t0, na: t0.Add(12 * time.Hour), jitter: -3, want: t0.Add(7 * time.Hour)},
		{name: "jitter above range is clamped", nb: t0, na: t0.Add(12 * time.Hour), jitter: 7, want: t0.Add(9 * time.Hour)},
		{name: "vault pki 2m ttl with 30s backdating", nb: t0.Add(-30 * time.Second), na: t0.Add(2 * time.Minute), jitter: 0.5, want: t0.Add(70 * time.Second)},
		{name: "empty lifetime renews at once", nb: t0, na: t0, jitter: 0.5, want: t0},
		{name: "inverted lifetime renews at once", nb: t0, na: t0.Add(-time.Hour), jitter: 0.5, want: t0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := renewAt(tc.nb, tc.na, tc.jitter)
			if !got.Equal(tc.want) {
				t.Fatalf("renewAt = %s, want %s", got.Sub(tc.nb), tc.want.Sub(tc.nb))
			}
			if tc.na.After(tc.nb) && !got.Before(tc.na) {
				t.Fatalf("renewAt %s is not before notAfter %s", got, tc.na)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &breaker{base: time.Second, max: 8 * time.Second, jitter: func() float64 { return 1 }} // no jitter: the full delay
	if ok, _ := b.allow(now); !ok {
		t.Fatal("a new breaker refuses")
	}
	if !b.failure(now) {
		t.Fatal("first failure not reported as a transition")
	}
	if ok, at := b.allow(now.Add(500 * time.Millisecond)); ok || !at.Equal(now.Add(time.Second)) {
		t.Fatalf("open breaker: allow = %v, retry at %v", ok, at)
	}
	// After the delay one probe passes; the next caller waits for it.
	if ok, _ := b.allow(now.Add(time.Second)); !ok {
		t.Fatal("probe refused after the delay")
	}
	if ok, _ := b.allow(now.Add(time.Second)); ok {
		t.Fatal("second caller let through while the probe runs")
	}
	if b.failure(now.Add(time.Second)) {
		t.Fatal("second failure reported as a transition")
	}
	if ok, at := b.allow(now.Add(2 * time.Second)); ok || !at.Equal(now.Add(3*time.Second)) {
		t.Fatalf("after two failures: allow = %v, retry at %v (want +2s back-off)", ok, at)
	}
	if !b.success() {
		t.Fatal("success after failures not reported as a transition")
	}
	if ok, _ := b.allow(now.Add(2 * time.Second)); !ok {
		t.Fatal("closed breaker refuses")
	}
}

func TestConfigValidate(t *testing.T) {
	approle := &AppRoleAuth{RoleID: secret.Ref{File: "/run/role-id"}, SecretID: secret.Ref{Env: "SECRET_ID"}}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{name: "token env", cfg: Config{Address: "http://127.0.0.1:8200", Auth: AuthConfig{Method: "token", Token: &TokenAuth{Env: "VAULT_TOKEN"}}}},
		{name: "approle", cfg: Config{Address: "https://vault:8200", Auth: AuthConfig{Method: "approle", AppRole: approle}}},
		{name: "kubernetes", cfg: Config{Address: "https://vault:8200", Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{Role: "tp"}}}},
		{name: "no address", cfg: Config{Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{Role: "tp"}}}, want: []string{"vault.address: missing"}},
		{name: "bad address", cfg: Config{Address: "vault:8200", Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{Role: "tp"}}}, want: []string{"vault.address: \"vault:8200\" is not an http(s) URL"}},
		{name: "no method", cfg: Config{Address: "http://v"}, want: []string{"vault.auth.method: missing"}},
		{name: "unknown method", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "ldap"}}, want: []string{`vault.auth.method: "ldap" is not supported`}},
		{name: "token without source", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "token", Token: &TokenAuth{}}}, want: []string{"vault.auth.token: give env"}},
		{name: "token with both", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "token", Token: &TokenAuth{Env: "A", File: "/b"}}}, want: []string{"vault.auth.token: set exactly one"}},
		{name: "approle missing secret_id", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "approle", AppRole: &AppRoleAuth{RoleID: secret.Ref{Env: "R"}}}}, want: []string{"vault.auth.approle.secret_id: missing"}},
		{name: "approle secret from vault", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "approle", AppRole: &AppRoleAuth{RoleID: secret.Ref{Env: "R"}, SecretID: secret.Ref{Vault: &secret.VaultRef{Path: "p", Field: "f"}}}}}, want: []string{"vault.auth.approle.secret_id: cannot come from Vault"}},
		{name: "kubernetes without role", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{}}}, want: []string{"vault.auth.kubernetes.role: missing"}},
		{name: "block of another method", cfg: Config{Address: "http://v", Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{Role: "r"}, AppRole: approle}}, want: []string{"vault.auth.approle: set, but vault.auth.method is \"kubernetes\""}},
		{name: "negative timeout", cfg: Config{Address: "http://v", Timeout: -1, Auth: AuthConfig{Method: "kubernetes", Kubernetes: &KubernetesAuth{Role: "r"}}}, want: []string{"vault.timeout"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted the config; want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSourceConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"kv ok pkcs12", KVCertConfig{Path: "p", PKCS12Field: "pfx", PasscodeField: "pass"}.Validate("routes.bc.cert.vault_kv"), ""},
		{"kv ok pem", KVCertConfig{Path: "p", CertField: "c", KeyField: "k"}.Validate("x"), ""},
		{"kv no path", KVCertConfig{CertField: "c", KeyField: "k"}.Validate("routes.bc.cert.vault_kv"), "routes.bc.cert.vault_kv.path: missing"},
		{"kv both styles", KVCertConfig{Path: "p", CertField: "c", KeyField: "k", PKCS12Field: "pfx", PasscodeField: "x"}.Validate("x"), "not both"},
		{"kv half pkcs12", KVCertConfig{Path: "p", PKCS12Field: "pfx"}.Validate("x"), "set both"},
		{"kv no fields", KVCertConfig{Path: "p"}.Validate("x"), "name the fields"},
		{"pki ok", PKIConfig{Role: "r", CommonName: "cn"}.Validate("x"), ""},
		{"pki no role", PKIConfig{CommonName: "cn"}.Validate("r.pki"), "r.pki.role: missing"},
		{"transit ok", TransitCertConfig{Key: TransitKeyConfig{Key: "k"}, Certificate: secret.VaultRef{Path: "p", Field: "f"}}.Validate("x"), ""},
		{"transit no key", TransitCertConfig{}.Validate("s.t"), "s.t.key.key: missing"},
		{"transit chain in transit", TransitCertConfig{Key: TransitKeyConfig{Key: "k"}}.Validate("x"), ""},
		{"transit kv without field", TransitCertConfig{Key: TransitKeyConfig{Key: "k"}, Certificate: secret.VaultRef{Path: "p"}}.Validate("s.t"), "s.t.certificate.field: missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.want == "" && tc.err != nil:
				t.Fatalf("unexpected error: %v", tc.err)
			case tc.want != "" && (tc.err == nil || !strings.Contains(tc.err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", tc.err, tc.want)
			}
		})
	}
}

func TestDecodeTransitSignature(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "vault:v1:aGVsbG8=", want: "hello"},
		{in: "vault:v12:aGVsbG8=", want: "hello"},
		{in: "aGVsbG8=", wantErr: true},
		{in: "vault:v1:***", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := decodeTransitSignature(tc.in)
		if (err != nil) != tc.wantErr || string(got) != tc.want {
			t.Errorf("decodeTransitSignature(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func TestClassify(t *testing.T) {
	if err := classify("op", &api.ResponseError{StatusCode: http.StatusForbidden, Errors: []string{"permission denied"}}); !errors.Is(err, ErrPermissionDenied) || isUnavailable(err) {
		t.Fatalf("403: %v", err)
	}
	if err := classify("op", &api.ResponseError{StatusCode: http.StatusNotFound}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("404: %v", err)
	}
	if err := classify("op", &api.ResponseError{StatusCode: http.StatusServiceUnavailable, Errors: []string{"Vault is sealed"}}); !isUnavailable(err) {
		t.Fatalf("503 not unavailable: %v", err)
	}
	if err := classify("op", errors.New(`Get "http://127.0.0.1:1/v1/x": dial tcp 127.0.0.1:1: connect: connection refused`)); !isUnavailable(err) {
		t.Fatalf("transport error not unavailable: %v", err)
	}
}

func TestHealthBook(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newHealthBook(func() time.Time { return now })
	if b.report("vault", nil) {
		t.Fatal("a first success is not a transition")
	}
	if h := b.snapshot(); !h.OK || h.Err() != nil {
		t.Fatalf("healthy book: %+v", h)
	}
	now = now.Add(time.Minute)
	if !b.report("vault", errors.New("connection refused")) {
		t.Fatal("failure after success not reported as a transition")
	}
	if b.report("vault", errors.New("connection refused")) {
		t.Fatal("repeated failure reported as a transition")
	}
	h := b.snapshot()
	if h.OK || h.Err() == nil || !strings.Contains(h.Err().Error(), "vault failing since 2025-01-01T00:01:00Z: connection refused") {
		t.Fatalf("degraded book: %+v, %v", h, h.Err())
	}
	if !b.report("vault", nil) || !b.snapshot().OK {
		t.Fatal("recovery not reported")
	}
}
