package intercept

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// vaultPKI sets up a root and an intermediate PKI mount with a role for
// interception leaves and returns the intermediate mount and a Logical
// whose token may only sign from the role and read the issuing CA.
func vaultPKI(t *testing.T, s *vaulttest.Server) (rootMount, mount string, root *x509.Certificate, l Logical) {
	t.Helper()
	rootMount, mount = vaulttest.Unique("intercept-root"), vaulttest.Unique("intercept-int")
	s.Mount(rootMount, "pki")
	s.Mount(mount, "pki")
	rs := s.Write(rootMount+"/root/generate/internal", map[string]any{"common_name": "Interception Root", "ttl": "720h"})
	root = parsePEMCert(t, rs.Data["certificate"].(string))
	newIntermediate(t, s, rootMount, mount, "Interception Intermediate 1")
	s.Write(mount+"/roles/intercept", map[string]any{
		"allowed_domains": "bank.example", "allow_bare_domains": true, "allow_subdomains": false,
		"key_type": "ec", "key_bits": 256, "max_ttl": "48h", "server_flag": true, "client_flag": false,
		"no_store": true,
	})
	policy := vaulttest.Unique("intercept-sign")
	s.Policy(policy, fmt.Sprintf(`
path "%s/sign/intercept" { capabilities = ["update"] }
path "%s/cert/ca" { capabilities = ["read"] }
`, mount, mount))
	tok, err := s.Client().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{policy}, NoDefaultPolicy: true, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Client()
	c.SetToken(tok.Auth.ClientToken)
	return rootMount, mount, root, APILogical(c)
}

// newIntermediate makes a new intermediate key in mount, has rootMount sign
// it and makes it the mount's default issuer.
func newIntermediate(t *testing.T, s *vaulttest.Server, rootMount, mount, cn string) {
	t.Helper()
	csr := s.Write(mount+"/intermediate/generate/internal", map[string]any{"common_name": cn, "key_type": "ec", "key_bits": 256})
	signed := s.Write(rootMount+"/root/sign-intermediate", map[string]any{"csr": csr.Data["csr"], "format": "pem_bundle", "ttl": "480h"})
	set := s.Write(mount+"/intermediate/set-signed", map[string]any{"certificate": signed.Data["certificate"]})
	if ids, ok := set.Data["imported_issuers"].([]any); ok && len(ids) > 0 {
		s.Write(mount+"/config/issuers", map[string]any{"default": ids[0]})
	}
}

func parsePEMCert(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVaultCA(t *testing.T) {
	s := vaulttest.Start(t)
	rootMount, mount, root, logical := vaultPKI(t, s)
	ca := NewVaultCA(logical, VaultPKIConfig{Mount: mount, Role: "intercept"})
	if _, err := ca.Poll(context.Background()); err != nil {
		t.Fatalf("Poll: %v", err)
	}
	obs := &countObserver{}
	leaves := NewLeaves(ca, LeafConfig{Observer: obs})
	ctx := context.Background()

	c, err := leaves.Certificate(ctx, "bank.example", allowOnly("bank.example", "evil.example"))
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	verifyLeaf(t, c, root, "bank.example")
	if len(c.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want leaf + intermediate", len(c.Certificate))
	}
	if _, err := leaves.Certificate(ctx, "bank.example", allowOnly("bank.example")); err != nil || obs.get("hit bank.example") != 1 {
		t.Fatalf("second request: %v, observer %v", err, obs.n)
	}

	// A host the role does not allow is refused by Vault even when allowed here.
	_, err = leaves.Certificate(ctx, "evil.example", allowOnly("bank.example", "evil.example"))
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != ReasonCAUnavailable {
		t.Fatalf("evil.example: %v, want ca_unavailable from Vault's refusal", err)
	}

	// Rotation: a new intermediate becomes the default issuer; Poll notices and new leaves come from it.
	gen := ca.Generation()
	newIntermediate(t, s, rootMount, mount, "Interception Intermediate 2")
	if changed, err := ca.Poll(ctx); err != nil || !changed || ca.Generation() == gen {
		t.Fatalf("Poll after rotation: changed=%v err=%v", changed, err)
	}
	after, err := leaves.Certificate(ctx, "bank.example", allowOnly("bank.example"))
	if err != nil {
		t.Fatal(err)
	}
	if after == c || after.Leaf.Issuer.CommonName != "Interception Intermediate 2" {
		t.Fatalf("after rotation the leaf was issued by %q", after.Leaf.Issuer.CommonName)
	}
	verifyLeaf(t, after, root, "bank.example")
}
