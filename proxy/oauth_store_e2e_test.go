package proxy_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// restartKeepsConsents consents two customers on one tokenproxy, stops it,
// starts another over the same store and checks both customers are served
// with their own tokens, with no new consent and no refresh (the stored
// access tokens are still valid).
func restartKeepsConsents(t *testing.T, b *bank, yaml string, vc *vaultsrc.Client) {
	x1 := startTP(t, b, yaml, vc)
	app := x1.app(t, "")
	app.consent(b, "alice", "marc")
	app.consent(b, "bob", "sophie")
	for subject, want := range map[string]string{"alice": "marc", "bob": "sophie"} {
		if a := app.account(subject); a.status != http.StatusOK || psu(a) != want {
			t.Fatalf("before the restart, %s: %d %s", subject, a.status, a.body)
		}
	}
	x1.stop()
	x2 := startTP(t, b, yaml, vc)
	app2 := x2.app(t, "")
	for subject, want := range map[string]string{"alice": "marc", "bob": "sophie"} {
		if a := app2.account(subject); a.status != http.StatusOK || psu(a) != want {
			t.Fatalf("after the restart, %s: %d %s", subject, a.status, a.body)
		}
	}
	if n := b.emu.Refreshes(); n != 0 {
		t.Fatalf("%d refreshes after the restart; the stored access tokens were valid", n)
	}
	ans := app2.api("GET", "/v1/routes/bpce/consents", nil)
	var list struct {
		Consents []struct{ Subject, Status string } `json:"consents"`
	}
	if json.Unmarshal(ans.body, &list) != nil || len(list.Consents) != 2 || list.Consents[0].Status != "active" {
		t.Fatalf("list after the restart: %d %s", ans.status, ans.body)
	}
	app.assertNoSecrets(b)
	app2.assertNoSecrets(b)
}

func TestOAuthRestartKeepsConsentsBolt(t *testing.T) {
	b := newBank(t)
	restartKeepsConsents(t, b, b.oauthYAML(freeAddr(t), "", "", boltStore(t, t.TempDir(), newKey(t))), nil)
}

func TestOAuthRestartKeepsConsentsVault(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	vs := vaulttest.Start(t)
	mount := vaulttest.Unique("consents")
	vs.Mount(mount, "kv-v2")
	t.Setenv("TP_TEST_VAULT_TOKEN", vs.Token)
	b := newBank(t)
	top := fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}\n", vs.Addr)
	yaml := b.oauthYAML(freeAddr(t), top, "", fmt.Sprintf("    vault_kv: {mount: %s, path: tokenproxy/consents}", mount))
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vc.Close() })
	restartKeepsConsents(t, b, yaml, vc)
}

// A store opened with another key, or without its key, is a start-up error
// naming the field and never the key; the store is not emptied.
func TestOAuthWrongStoreKey(t *testing.T) {
	b := newBank(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	good := newKey(t)
	x := startTP(t, b, b.oauthYAML(addr, "", "", boltStore(t, dir, good)), nil)
	x.app(t, "").consent(b, "alice", "marc")
	x.stop()

	wrong := newKey(t)
	t.Setenv("TP_TEST_EMPTY_KEY", "")
	for _, tc := range []struct{ name, store, want string }{
		{"another key", boltStoreAt(t, dir, t.TempDir(), wrong), "not the one this store was created with"},
		{"key too short", boltStoreAt(t, dir, t.TempDir(), wrong[:16]), "must be 32 bytes"},
		{"key missing", fmt.Sprintf("    bbolt: {path: %s, key: {env: TP_TEST_EMPTY_KEY}}", filepath.Join(dir, "consents.db")), "consents.store.bbolt.key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(b.oauthYAML(addr, "", "", tc.store)))
			if err != nil {
				t.Fatal(err)
			}
			// Both ways tokenproxy opens the store: on its own, and as
			// every command does, through the composition root.
			_, err1 := assemble.OpenConsents(context.Background(), cfg, assemble.Options{})
			_, err2 := assemble.Open(context.Background(), cfg, assemble.Setup{})
			for _, err := range []error{err1, err2} {
				msg := fmt.Sprint(err)
				if err == nil || !strings.Contains(msg, "consents.store.bbolt.key") || !strings.Contains(msg, tc.want) {
					t.Fatalf("error %q; want the field and %q", msg, tc.want)
				}
				for _, k := range [][]byte{good, wrong} {
					if strings.Contains(msg, base64.StdEncoding.EncodeToString(k)) {
						t.Fatal("the error shows a key")
					}
				}
			}
		})
	}
	// The right key still opens every consent.
	x2 := startTP(t, b, b.oauthYAML(addr, "", "", boltStore(t, dir, good)), nil)
	if a := x2.app(t, "").account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("with the right key: %d %s", a.status, a.body)
	}
}

// Gateway mode: subjects belong to the caller that created the consent.
// Caller b can neither use, list, read nor delete caller a's customers,
// through the proxy or the consent API; both may name a customer "alice"
// and each gets its own.
func TestOAuthGatewayCallers(t *testing.T) {
	b := newBank(t)
	dir := t.TempDir()
	for name, pass := range map[string]string{"a": "pass-a-7Hq", "b": "pass-b-2Kd", "c": "pass-c-9Zx"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pass), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	top := fmt.Sprintf("callers:\n  - {name: a, password: {file: %s/a}}\n  - {name: b, password: {file: %s/b}}\n  - {name: c, password: {file: %s/c}}\n", dir, dir, dir)
	x := startTP(t, b, b.oauthYAML(freeAddr(t), top, "    allow: {callers: [a, b]}", boltStore(t, dir, newKey(t))), nil)
	appA, appB := x.app(t, "a:pass-a-7Hq"), x.app(t, "b:pass-b-2Kd")
	appA.consent(b, "alice", "marc")
	appA.consent(b, "carol", "carla")
	appB.consent(b, "alice", "sophie")

	if a := appA.account("alice"); a.status != http.StatusOK || psu(a) != "marc" {
		t.Fatalf("a's alice: %d %s", a.status, a.body)
	}
	if a := appB.account("alice"); a.status != http.StatusOK || psu(a) != "sophie" {
		t.Fatalf("b's alice: %d %s", a.status, a.body)
	}
	if a := appB.account("carol"); a.status != http.StatusUnauthorized || errorCode(t, a) != proxy.CodeConsentRequired {
		t.Fatalf("b used a's carol: %d %s", a.status, a.body)
	}
	ans := appB.api("GET", "/v1/routes/bpce/consents", nil)
	if ans.status != http.StatusOK || strings.Contains(string(ans.body), "carol") || strings.Count(string(ans.body), `"subject"`) != 1 {
		t.Fatalf("b's list: %s", ans.body)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if ans := appB.api(m, "/v1/routes/bpce/consents/carol", nil); ans.status != http.StatusNotFound {
			t.Fatalf("b %s a's carol: %d %s", m, ans.status, ans.body)
		}
	}
	if a := appA.account("carol"); a.status != http.StatusOK || psu(a) != "carla" {
		t.Fatalf("a's carol after b's attempts: %d %s", a.status, a.body)
	}
	// Callers are authenticated as the proxy does: unknown, wrong or not allowed.
	for _, user := range []string{"", "a:wrong", "c:pass-c-9Zx"} {
		ans := x.app(t, user).api("GET", "/v1/routes/bpce/consents", nil)
		if ans.status != http.StatusUnauthorized || !strings.Contains(string(ans.body), `"route":"bpce"`) ||
			ans.header.Get("WWW-Authenticate") != `Basic realm="tokenproxy"` {
			t.Fatalf("consent API as %q: %d %v %s; want 401 naming the route, with WWW-Authenticate: Basic", user, ans.status, ans.header, ans.body)
		}
	}
	if a := x.app(t, "c:pass-c-9Zx").account("alice"); a.status != http.StatusForbidden {
		t.Fatalf("proxy as c: %d %s", a.status, a.body)
	}
	appA.assertNoSecrets(b)
	appB.assertNoSecrets(b)
}

// Two replicas sharing one Redis store and one Vault KV consent store, with
// rotating refresh tokens: 200 concurrent requests on each for one customer
// whose access token has expired cause exactly one refresh at the bank and
// no invalid_grant, and every request is served.
func TestOAuthTwoReplicasOneRefresh(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server and redis-server")
	}
	vs := vaulttest.Start(t)
	rs := redistest.Start(t)
	mount := vaulttest.Unique("consents")
	vs.Mount(mount, "kv-v2")
	t.Setenv("TP_TEST_VAULT_TOKEN", vs.Token)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(newKey(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	b := newBank(t)
	top := fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}\n"+
		"store:\n  kind: redis\n  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: 2, poll_interval: 50ms, key_prefix: %s}\n",
		vs.Addr, rs.Addr(), keyFile, vaulttest.Unique("tp"))
	storeYAML := fmt.Sprintf("    vault_kv: {mount: %s, path: tokenproxy/consents}", mount)
	var apps []*app
	for _, addr := range twoFreeAddrs(t) {
		yaml := b.oauthYAML(addr, top, "", storeYAML)
		cfg, err := config.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vc.Close() })
		apps = append(apps, startTP(t, b, yaml, vc).app(t, ""))
	}
	b.emu.SetRotate(true)
	b.emu.SetTTL(time.Second, 90*24*time.Hour)
	apps[0].consent(b, "alice", "marc")
	b.emu.SetTTL(time.Hour, 90*24*time.Hour)
	time.Sleep(1100 * time.Millisecond) // the consent's access token is now past its expiry
	before, beforeReq := b.emu.Refreshes(), len(b.emu.TokenRequests())
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	for i := range 400 {
		wg.Go(func() {
			a := apps[i%2].account("alice")
			code := fmt.Sprint(a.status)
			if a.status != http.StatusOK {
				code += " " + a.header.Get(proxy.HeaderError)
			}
			mu.Lock()
			statuses[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	refreshes, requests := b.emu.Refreshes()-before, len(b.emu.TokenRequests())-beforeReq
	if refreshes != 1 || requests != 1 || statuses["200"] != 400 {
		t.Fatalf("2 replicas × 200 requests: %d refreshes, %d token requests at the bank, statuses %v; want 1, 1 and 400 × 200",
			refreshes, requests, statuses)
	}
	t.Logf("2 replicas × 200 concurrent requests, expired token, rotating refresh tokens: %d refresh, statuses %v", refreshes, statuses)
}

// twoFreeAddrs returns two distinct free loopback addresses.
func twoFreeAddrs(t *testing.T) [2]string {
	t.Helper()
	var out [2]string
	for i := range out {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out[i] = ln.Addr().String()
	}
	return out
}
