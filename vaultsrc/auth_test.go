package vaultsrc

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// kvPolicy lets a token read and write a KV v2 mount and look itself up.
func kvPolicy(mount string) string {
	return `path "` + mount + `/data/*" { capabilities = ["read", "create", "update"] }
path "` + mount + `/metadata/*" { capabilities = ["read"] }`
}

func TestTokenAuth(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	srv.PutKV(mount, "bank/m2m", map[string]any{"password": "s3cret-pw"})

	t.Run("file", func(t *testing.T) {
		policy := vaulttest.Unique("p")
		srv.Policy(policy, kvPolicy(mount))
		tok := srv.Write("auth/token/create", map[string]any{"policies": []string{policy}, "ttl": "1h"}).Auth.ClientToken
		log, logs := observed()
		c, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodToken, Token: &TokenAuth{File: writeFile(t, "token", tok+"\n")}}}, WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		v, err := c.ReadField(t.Context(), mount, "bank/m2m", "password")
		if err != nil || v.Reveal() != "s3cret-pw" {
			t.Fatalf("ReadField = %v, %v", v, err)
		}
		assertNotLogged(t, logs, tok, "s3cret-pw")
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("TP_TEST_VAULT_TOKEN", srv.Token)
		c, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodToken, Token: &TokenAuth{Env: "TP_TEST_VAULT_TOKEN"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.ReadField(t.Context(), mount, "bank/m2m", "password"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		const bad = "hvs.not-a-real-token-123"
		_, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodToken, Token: &TokenAuth{File: writeFile(t, "token", bad)}}})
		var aerr *AuthError
		if !errors.As(err, &aerr) || aerr.Unavailable {
			t.Fatalf("New with a wrong token: %v", err)
		}
		if strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "token auth (file ") || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("error message %q: want method and Vault's reason, without the token", err)
		}
	})
	t.Run("vault down", func(t *testing.T) {
		_, err := New(t.Context(), Config{Address: "http://127.0.0.1:1", Auth: AuthConfig{Method: MethodToken, Token: &TokenAuth{File: writeFile(t, "token", "x")}}})
		var aerr *AuthError
		if !errors.As(err, &aerr) || !aerr.Unavailable {
			t.Fatalf("New against a closed port: %v", err)
		}
	})
	t.Run("missing field and secret", func(t *testing.T) {
		c := rootClient(t, srv)
		if _, err := c.ReadField(t.Context(), mount, "bank/m2m", "user"); err == nil || !strings.Contains(err.Error(), `no field "user"`) {
			t.Fatalf("missing field: %v", err)
		}
		if _, err := c.ReadField(t.Context(), mount, "bank/none", "user"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing secret: %v", err)
		}
	})
	t.Run("secret reference", func(t *testing.T) {
		c := rootClient(t, srv)
		src, err := secret.Ref{Vault: &secret.VaultRef{Mount: mount, Path: "bank/m2m", Field: "password"}}.Open(c)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := src.Get(t.Context()); err != nil || v.Reveal() != "s3cret-pw" {
			t.Fatalf("Get = %v, %v", v, err)
		}
		// A new version is read on the next Get.
		srv.PutKV(mount, "bank/m2m", map[string]any{"password": "rotated"})
		if v, err := src.Get(t.Context()); err != nil || v.Reveal() != "rotated" {
			t.Fatalf("Get after rotation = %v, %v", v, err)
		}
	})
}

func TestAppRoleAuth(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	srv.PutKV(mount, "svc", map[string]any{"k": "v"})
	policy := vaulttest.Unique("p")
	srv.Policy(policy, kvPolicy(mount))
	authMount := vaulttest.Unique("approle")
	srv.EnableAuth(authMount, "approle")
	roleID, secretID := srv.AppRole(authMount, "payments", map[string]any{"token_policies": policy, "token_ttl": "1h"})

	cfg := func(role, secretID string) Config {
		t.Setenv("TP_TEST_SECRET_ID", secretID)
		return Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodAppRole, AppRole: &AppRoleAuth{
			Mount:    authMount,
			Role:     "payments",
			RoleID:   secret.Ref{File: writeFile(t, "role-id", role)},
			SecretID: secret.Ref{Env: "TP_TEST_SECRET_ID"},
		}}}
	}

	t.Run("login", func(t *testing.T) {
		log, logs := observed()
		c, err := New(t.Context(), cfg(roleID, secretID), WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if v, err := c.ReadField(t.Context(), mount, "svc", "k"); err != nil || v.Reveal() != "v" {
			t.Fatalf("ReadField = %v, %v", v, err)
		}
		assertNotLogged(t, logs, roleID, secretID)
	})
	for _, tc := range []struct{ name, role, secret string }{
		{"wrong secret id", roleID, "00000000-0000-0000-0000-000000000000"},
		{"wrong role id", "11111111-2222-3333-4444-555555555555", secretID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := observed()
			_, err := New(t.Context(), cfg(tc.role, tc.secret), WithLogger(log))
			var aerr *AuthError
			if !errors.As(err, &aerr) || aerr.Unavailable {
				t.Fatalf("New: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "approle auth at auth/"+authMount+` (role "payments")`) || !strings.Contains(msg, "invalid role or secret ID") {
				t.Fatalf("error %q does not name the method, role and reason", msg)
			}
			for _, s := range []string{tc.role, tc.secret} {
				if strings.Contains(msg, s) {
					t.Fatalf("error %q contains a credential", msg)
				}
			}
			assertNotLogged(t, logs, tc.role, tc.secret)
		})
	}
}

// TestReloginOnTokenExpiry uses AppRole tokens that live 2 s (renewable up to
// 4 s): the client must renew, then log in again before the max TTL, and keep
// reading throughout.
func TestReloginOnTokenExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	srv.PutKV(mount, "svc", map[string]any{"k": "v"})
	policy := vaulttest.Unique("p")
	srv.Policy(policy, kvPolicy(mount))
	authMount := vaulttest.Unique("approle")
	srv.EnableAuth(authMount, "approle")
	roleID, secretID := srv.AppRole(authMount, "short", map[string]any{"token_policies": policy, "token_ttl": "2s", "token_max_ttl": "4s"})

	c, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodAppRole, AppRole: &AppRoleAuth{
		Mount: authMount, RoleID: secret.Ref{File: writeFile(t, "r", roleID)}, SecretID: secret.Ref{File: writeFile(t, "s", secretID)},
	}}}, WithMinLoginInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	end := time.Now().Add(9 * time.Second)
	reads := 0
	for time.Now().Before(end) {
		if _, err := c.ReadField(t.Context(), mount, "svc", "k"); err != nil {
			t.Fatalf("read %d failed: %v", reads, err)
		}
		reads++
		time.Sleep(100 * time.Millisecond)
	}
	st := c.Stats()
	t.Logf("reads=%d logins=%d renewals=%d requests=%d", reads, st.Logins, st.Renewals, st.Requests)
	if st.Logins < 3 {
		t.Fatalf("logins = %d over 9 s with a 4 s max TTL; want at least 3", st.Logins)
	}
	if st.Renewals < 1 {
		t.Fatalf("no renewal happened")
	}
}

// TestReloginOnRevocation: a token revoked behind the client's back is
// noticed at the next request, which logs in again and succeeds.
func TestReloginOnRevocation(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	srv.PutKV(mount, "svc", map[string]any{"k": "v"})
	policy := vaulttest.Unique("p")
	srv.Policy(policy, kvPolicy(mount))
	authMount := vaulttest.Unique("approle")
	srv.EnableAuth(authMount, "approle")
	roleID, secretID := srv.AppRole(authMount, "r", map[string]any{"token_policies": policy, "token_ttl": "1h"})
	c, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodAppRole, AppRole: &AppRoleAuth{
		Mount: authMount, RoleID: secret.Ref{File: writeFile(t, "r", roleID)}, SecretID: secret.Ref{File: writeFile(t, "s", secretID)},
	}}}, WithMinLoginInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Write("auth/token/revoke", map[string]any{"token": c.api.Token()})
	if _, err := c.ReadField(t.Context(), mount, "svc", "k"); err != nil {
		t.Fatalf("read after revocation: %v", err)
	}
	if n := c.Stats().Logins; n != 2 {
		t.Fatalf("logins = %d, want 2", n)
	}
	// A path the policy does not grant is a plain refusal, not a re-login.
	if _, err := c.ReadField(t.Context(), "secret", "other", "k"); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("read outside the policy: %v", err)
	}
	if n := c.Stats().Logins; n != 2 {
		t.Fatalf("a policy refusal caused a login (logins = %d)", n)
	}
}

// TestKubernetesAuth configures Vault's kubernetes auth against a TokenReview
// endpoint served by the test (there is no API server here), and logs in with
// a service-account JWT from a file.
func TestKubernetesAuth(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("kv")
	srv.Mount(mount, "kv-v2")
	srv.PutKV(mount, "svc", map[string]any{"k": "v"})
	policy := vaulttest.Unique("p")
	srv.Policy(policy, kvPolicy(mount))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saJWT := signJWT(t, key, map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:payments:tokenproxy",
		"kubernetes.io/serviceaccount/namespace": "payments",
		"kubernetes.io/serviceaccount/service-account.name": "tokenproxy",
		"kubernetes.io/serviceaccount/service-account.uid":  "6a1c7e1e-uid",
		"kubernetes.io/serviceaccount/secret.name":          "tokenproxy-token",
		"aud": []string{"vault"}, // as the projected token in deploy/k8s is bound
	})
	const reviewerJWT = "reviewer-jwt"
	var reviews atomic.Int32
	k8s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Authorization") != "Bearer "+reviewerJWT {
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Spec struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		reviews.Add(1)
		status := map[string]any{"authenticated": false}
		if req.Spec.Token == saJWT {
			status = map[string]any{"authenticated": true, "audiences": req.Spec.Audiences, "user": map[string]any{
				"username": "system:serviceaccount:payments:tokenproxy", "uid": "6a1c7e1e-uid",
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status,
		})
	}))
	defer k8s.Close()

	authMount := vaulttest.Unique("kubernetes")
	srv.EnableAuth(authMount, "kubernetes")
	srv.Write("auth/"+authMount+"/config", map[string]any{
		"kubernetes_host":      k8s.URL,
		"kubernetes_ca_cert":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k8s.Certificate().Raw})),
		"token_reviewer_jwt":   reviewerJWT,
		"disable_local_ca_jwt": true,
	})
	srv.Write("auth/"+authMount+"/role/tokenproxy", map[string]any{
		"bound_service_account_names":      "tokenproxy",
		"bound_service_account_namespaces": "payments",
		"audience":                         "vault",
		"token_policies":                   policy,
		"token_ttl":                        "1h",
	})
	jwtFile := writeFile(t, "token", saJWT)

	t.Run("login", func(t *testing.T) {
		log, logs := observed()
		c, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodKubernetes,
			Kubernetes: &KubernetesAuth{Role: "tokenproxy", Mount: authMount, JWTFile: jwtFile}}}, WithLogger(log))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if v, err := c.ReadField(t.Context(), mount, "svc", "k"); err != nil || v.Reveal() != "v" {
			t.Fatalf("ReadField = %v, %v", v, err)
		}
		if reviews.Load() == 0 {
			t.Fatal("Vault did not call the TokenReview endpoint")
		}
		assertNotLogged(t, logs, saJWT)
	})
	t.Run("wrong role", func(t *testing.T) {
		_, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodKubernetes,
			Kubernetes: &KubernetesAuth{Role: "billing", Mount: authMount, JWTFile: jwtFile}}})
		var aerr *AuthError
		if !errors.As(err, &aerr) || aerr.Unavailable {
			t.Fatalf("New: %v", err)
		}
		if !strings.Contains(err.Error(), `kubernetes auth at auth/`+authMount+` (role "billing")`) || strings.Contains(err.Error(), saJWT) {
			t.Fatalf("error %q: want method and role, no JWT", err)
		}
	})
	t.Run("rejected jwt", func(t *testing.T) {
		other := signJWT(t, key, map[string]any{
			"iss":                                    "kubernetes/serviceaccount",
			"kubernetes.io/serviceaccount/namespace": "payments",
			"kubernetes.io/serviceaccount/service-account.name": "tokenproxy",
			"kubernetes.io/serviceaccount/service-account.uid":  "6a1c7e1e-uid",
			"aud": []string{"vault"},
		})
		_, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodKubernetes,
			Kubernetes: &KubernetesAuth{Role: "tokenproxy", Mount: authMount, JWTFile: writeFile(t, "t", other)}}})
		if err == nil || strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("login with a JWT the API server rejects: %v", err)
		}
	})
	t.Run("token for another audience", func(t *testing.T) {
		apiToken := signJWT(t, key, map[string]any{
			"iss":                                    "kubernetes/serviceaccount",
			"kubernetes.io/serviceaccount/namespace": "payments",
			"kubernetes.io/serviceaccount/service-account.name": "tokenproxy",
			"kubernetes.io/serviceaccount/service-account.uid":  "6a1c7e1e-uid",
			"aud": []string{"https://kubernetes.default.svc"},
		})
		_, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodKubernetes,
			Kubernetes: &KubernetesAuth{Role: "tokenproxy", Mount: authMount, JWTFile: writeFile(t, "t", apiToken)}}})
		var aerr *AuthError
		if !errors.As(err, &aerr) || aerr.Unavailable {
			t.Fatalf("login with an API-server token: %v", err)
		}
	})
	t.Run("missing jwt file", func(t *testing.T) {
		_, err := New(t.Context(), Config{Address: srv.Addr, Auth: AuthConfig{Method: MethodKubernetes,
			Kubernetes: &KubernetesAuth{Role: "tokenproxy", Mount: authMount, JWTFile: "/nonexistent/token"}}})
		if err == nil || !strings.Contains(err.Error(), "service-account token") {
			t.Fatalf("missing JWT file: %v", err)
		}
	})
}

// signJWT makes an RS256 JWT with the given claims.
func signJWT(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "test"}) + "." + enc(claims)
	h := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
