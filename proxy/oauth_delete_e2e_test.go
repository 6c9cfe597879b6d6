package proxy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// replicaSet is n tokenproxy replicas over one Vault KV consent store and,
// when shared, one Redis token store.
type replicaSet struct {
	t     *testing.T
	b     *bank
	yamls []string
	vcs   []*vaultsrc.Client
	tps   []*tp
	apps  []*app
}

func startReplicas(t *testing.T, b *bank, n int, shared bool) *replicaSet {
	t.Helper()
	vs := vaulttest.Start(t)
	mount := vaulttest.Unique("consents")
	vs.Mount(mount, "kv-v2")
	t.Setenv("TP_TEST_VAULT_TOKEN", vs.Token)
	top := fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}\n", vs.Addr)
	if shared {
		rs := redistest.Start(t)
		keyFile := filepath.Join(t.TempDir(), "store.key")
		if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(newKey(t))), 0o600); err != nil {
			t.Fatal(err)
		}
		top += fmt.Sprintf("store:\n  kind: redis\n  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: %d, poll_interval: 50ms, key_prefix: %s}\n",
			rs.Addr(), keyFile, n, vaulttest.Unique("tp"))
	}
	storeYAML := fmt.Sprintf("    vault_kv: {mount: %s, path: tokenproxy/consents}", mount)
	s := &replicaSet{t: t, b: b}
	for range n {
		// A bank that keeps honouring an access token after its refresh
		// token is revoked (or a route without a revocation endpoint): only
		// tokenproxy can stop a deleted consent's token.
		yaml := strings.Replace(b.oauthYAML(freeAddr(t), top, "", storeYAML), "      revocation_url: ", "      # revocation_url: ", 1)
		cfg, err := config.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vc.Close() })
		s.yamls, s.vcs = append(s.yamls, yaml), append(s.vcs, vc)
	}
	s.start()
	return s
}

func (s *replicaSet) start() {
	s.tps, s.apps = nil, nil
	for i, yaml := range s.yamls {
		x := startTP(s.t, s.b, yaml, s.vcs[i])
		s.tps, s.apps = append(s.tps, x), append(s.apps, x.app(s.t, ""))
	}
}

// restart stops every replica, then starts them all again.
func (s *replicaSet) restart() {
	for _, x := range s.tps {
		x.stop()
	}
	s.start()
}

// bankSawAfter returns how many account requests the bank received at or
// after since with one of the access tokens it had issued for psu before.
func bankSawAfter(b *bank, psu string, since time.Time) int {
	tokens := map[string]bool{}
	n := 0
	for _, r := range b.emu.Received() {
		h := r.Header.Get("Authorization")
		if r.Time.Before(since) {
			if p, ok := b.emu.CustomerOf(h); ok && p == psu {
				tokens[h] = true
			}
			continue
		}
		if tokens[h] {
			n++
		}
	}
	return n
}

// untilConsentRequired polls a replica for subject until it answers 401
// consent_required and returns how long after deleted that answer came. A
// request sent a second or more after deleted must not be served.
func untilConsentRequired(t *testing.T, a *app, replica int, subject string, deleted time.Time) time.Duration {
	t.Helper()
	deadline := deleted.Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sent := time.Now()
		ans := a.account(subject)
		switch {
		case ans.status == http.StatusUnauthorized && errorCode(t, ans) == proxy.CodeConsentRequired:
			return time.Since(deleted)
		case ans.status == http.StatusOK && sent.Sub(deleted) >= time.Second:
			t.Fatalf("replica %d served %s's deleted consent %v after the delete returned", replica+1, subject, sent.Sub(deleted).Round(time.Millisecond))
		case ans.status != http.StatusOK:
			t.Fatalf("replica %d, %s: %d %s", replica+1, subject, ans.status, ans.body)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("replica %d still serves %s's deleted consent 10 s after the delete", replica+1, subject)
	return 0
}

// deleteStopsEveryReplica: three replicas serve alice and bob; alice's
// consent is deleted through replica 3; every replica answers
// consent_required for alice within a second (at once with a shared store:
// the forget message), keeps serving bob, and does so again after every
// replica restarts.
func deleteStopsEveryReplica(t *testing.T, shared bool) {
	b := newBank(t)
	s := startReplicas(t, b, 3, shared)
	s.apps[0].consent(b, "alice", "marc")
	s.apps[0].consent(b, "bob", "sophie")
	for i, a := range s.apps {
		for subject, want := range map[string]string{"alice": "marc", "bob": "sophie"} {
			if ans := a.account(subject); ans.status != http.StatusOK || psu(ans) != want {
				t.Fatalf("replica %d, %s before the delete: %d %s", i+1, subject, ans.status, ans.body)
			}
		}
	}
	if ans := s.apps[2].api("DELETE", "/v1/routes/bpce/consents/alice", nil); ans.status != http.StatusNoContent {
		t.Fatalf("delete on replica 3: %d %s", ans.status, ans.body)
	}
	deleted := time.Now()
	for i, a := range s.apps {
		d := untilConsentRequired(t, a, i, "alice", deleted)
		t.Logf("replica %d: consent_required %v after the delete returned", i+1, d.Round(time.Millisecond))
		if ans := a.account("bob"); ans.status != http.StatusOK || psu(ans) != "sophie" {
			t.Fatalf("replica %d, bob after alice's delete: %d %s", i+1, ans.status, ans.body)
		}
	}
	// With a shared store every replica is told before the delete returns;
	// without one, each stops within the confirmation interval.
	since := deleted
	if !shared {
		since = deleted.Add(assemble.ConsentConfirmEvery)
	}
	if n := bankSawAfter(b, "marc", since); n != 0 {
		t.Fatalf("the bank received %d requests with the deleted consent's token after the delete (+%v)", n, since.Sub(deleted))
	}

	restarted := time.Now()
	s.restart()
	for i, a := range s.apps {
		if ans := a.account("alice"); ans.status != http.StatusUnauthorized || errorCode(t, ans) != proxy.CodeConsentRequired {
			t.Fatalf("replica %d, alice after every replica restarted: %d %s", i+1, ans.status, ans.body)
		}
		if ans := a.account("bob"); ans.status != http.StatusOK || psu(ans) != "sophie" {
			t.Fatalf("replica %d, bob after the restart: %d %s", i+1, ans.status, ans.body)
		}
	}
	if n := bankSawAfter(b, "marc", restarted); n != 0 {
		t.Fatalf("the bank received %d requests with the deleted consent's token after the restart", n)
	}
}

func TestOAuthDeleteStopsEveryReplicaShared(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server and redis-server")
	}
	deleteStopsEveryReplica(t, true)
}

func TestOAuthDeleteStopsEveryReplicaVaultOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	deleteStopsEveryReplica(t, false)
}

// A consent that is gone from the consent store while the shared store
// still holds its token (deleted while Redis could not be told): replicas
// starting cold read the token back from Redis but confirm the consent
// before using it, and answer consent_required.
func TestOAuthColdStartIgnoresSharedTokenOfGoneConsent(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server and redis-server")
	}
	b := newBank(t)
	s := startReplicas(t, b, 2, true)
	s.apps[0].consent(b, "carol", "carla")
	for i, a := range s.apps {
		if ans := a.account("carol"); ans.status != http.StatusOK || psu(ans) != "carla" {
			t.Fatalf("replica %d before: %d %s", i+1, ans.status, ans.body)
		}
	}
	for _, x := range s.tps {
		x.stop()
	}
	// The consent store alone forgets carol: Redis keeps her sealed token.
	store := consentstore.NewVault(s.vcs[0], consentMount(t, s.yamls[0]), "tokenproxy/consents")
	if err := store.Delete(context.Background(), consentstore.Key{Route: "bpce", Subject: "carol"}); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	s.start()
	for i, a := range s.apps {
		if ans := a.account("carol"); ans.status != http.StatusUnauthorized || errorCode(t, ans) != proxy.CodeConsentRequired {
			t.Fatalf("replica %d after a cold start, carol's consent gone: %d %s", i+1, ans.status, ans.body)
		}
	}
	if n := bankSawAfter(b, "carla", gone); n != 0 {
		t.Fatalf("the bank received %d requests with the gone consent's token after the cold start", n)
	}
}

// consentMount is the Vault KV mount of the consent store in yaml.
func consentMount(t *testing.T, yaml string) string {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Consents.Store.VaultKV.Mount
}
