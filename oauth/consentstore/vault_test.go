package consentstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// TestVaultStoreThroughClient: the Vault store reaches Vault through the
// vaultsrc client, so a token revoked behind its back costs one re-login,
// not a failed refresh, and an outage is a typed *vaultsrc.UnavailableError
// (never "no consent"), with later calls held back by the client's breaker.
func TestVaultStoreThroughClient(t *testing.T) {
	srv := vaulttest.StartOwn(t)
	mount := vaulttest.Unique("consents")
	srv.Mount(mount, "kv-v2")
	policy := vaulttest.Unique("consents")
	srv.Policy(policy, `path "`+mount+`/*" { capabilities = ["create", "read", "update", "delete", "list"] }`)
	authMount := vaulttest.Unique("approle")
	srv.EnableAuth(authMount, "approle")
	roleID, secretID := srv.AppRole(authMount, "tp", map[string]any{"token_policies": policy, "token_ttl": "1h"})
	t.Setenv("TP_TEST_SECRET_ID", secretID)
	t.Setenv("TP_TEST_ROLE_ID", roleID)
	vc, err := vaultsrc.New(t.Context(), vaultsrc.Config{Address: srv.Addr, Timeout: 2 * time.Second,
		Auth: vaultsrc.AuthConfig{Method: vaultsrc.MethodAppRole, AppRole: &vaultsrc.AppRoleAuth{Mount: authMount,
			RoleID: secret.Ref{Env: "TP_TEST_ROLE_ID"}, SecretID: secret.Ref{Env: "TP_TEST_SECRET_ID"}}}},
		vaultsrc.WithMinLoginInterval(10*time.Millisecond), vaultsrc.WithBackoff(time.Minute, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	s := NewVault(vc, mount, "tokenproxy")
	ctx := context.Background()
	c := sample("marc")
	gen, err := s.Put(ctx, c, 0)
	if err != nil {
		t.Fatal(err)
	}

	revokeLogins(t, srv, authMount)
	got, err := s.Get(ctx, c.Key())
	if err != nil || got.Generation != gen {
		t.Fatalf("Get after the token was revoked: %v", err)
	}
	if n := vc.Stats().Logins; n != 2 {
		t.Fatalf("logins = %d, want 2 (one re-login after the revocation)", n)
	}

	srv.Stop()
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"get", func() error { _, err := s.Get(ctx, c.Key()); return err }},
		{"put", func() error { _, err := s.Put(ctx, c, gen); return err }},
		{"list", func() error { _, err := s.List(ctx, Filter{Route: c.Route, Owner: c.Owner}); return err }},
		{"delete", func() error { return s.Delete(ctx, c.Key()) }},
	} {
		err := call.do()
		var ue *vaultsrc.UnavailableError
		if !errors.As(err, &ue) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
			t.Fatalf("%s while Vault is down: %v, want a *vaultsrc.UnavailableError", call.name, err)
		}
		if strings.Contains(err.Error(), srv.Addr) {
			t.Fatalf("%s: the error names Vault's URL: %v", call.name, err)
		}
	}
	if vc.Stats().FastFails == 0 {
		t.Fatal("no call was held back by the breaker while Vault was down")
	}
}

// revokeLogins revokes every token issued by logging in at auth/<authMount>.
func revokeLogins(t *testing.T, srv *vaulttest.Server, authMount string) {
	t.Helper()
	root := srv.Client()
	list, err := root.Logical().List("auth/token/accessors")
	if err != nil || list == nil {
		t.Fatalf("listing token accessors: %v", err)
	}
	keys, _ := list.Data["keys"].([]any)
	revoked := 0
	for _, k := range keys {
		acc, _ := k.(string)
		info, err := root.Auth().Token().LookupAccessor(acc)
		if err != nil || info == nil {
			continue
		}
		if p, _ := info.Data["path"].(string); strings.HasPrefix(p, "auth/"+authMount+"/") {
			if err := root.Auth().Token().RevokeAccessor(acc); err != nil {
				t.Fatalf("revoking: %v", err)
			}
			revoked++
		}
	}
	if revoked == 0 {
		t.Fatal("no token to revoke")
	}
}
