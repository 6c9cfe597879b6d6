package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Three replicas sharing one Vault KV consent store and one Redis, behind a
// round-robin front that carries the one callback_url: 20 consents, each
// started on one replica and completed by the customer's browser on
// another, are all active; a used state is refused on every replica.
func TestOAuthConsentsAcrossThreeReplicas(t *testing.T) {
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

	// The front: round robin over the replicas' consent APIs; it tells in
	// X-Test-Replica which one answered.
	var backends []*url.URL
	var next atomic.Uint64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int((next.Add(1) - 1) % uint64(len(backends))) //nolint:gosec // G115: below 3
		w.Header().Set("X-Test-Replica", strconv.Itoa(i))
		httputil.NewSingleHostReverseProxy(backends[i]).ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	top := fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}\n"+
		"store:\n  kind: redis\n  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: 3, poll_interval: 50ms, key_prefix: %s}\n",
		vs.Addr, rs.Addr(), keyFile, vaulttest.Unique("tp"))
	storeYAML := fmt.Sprintf("    vault_kv: {mount: %s, path: tokenproxy/consents}", mount)
	var replicas []*tp
	for range 3 {
		addr := freeAddr(t)
		yaml := strings.Replace(b.oauthYAML(addr, top, "", storeYAML), "callback_url: http://"+addr, "callback_url: "+front.URL, 1)
		cfg, err := config.Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		vc, err := vaultsrc.New(context.Background(), assemble.VaultConfig(*cfg.Vault))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { vc.Close() })
		x := startTP(t, b, yaml, vc)
		u, _ := url.Parse(x.api)
		backends = append(backends, u)
		replicas = append(replicas, x)
	}

	var landed *url.URL
	var callbackReplica string
	browser := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.ca.CertPool()}},
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host == "app.example" {
				landed, callbackReplica = req.URL, req.Response.Header.Get("X-Test-Replica")
				return http.ErrUseLastResponse
			}
			return nil
		}}
	t.Cleanup(browser.CloseIdleConnections)
	const n = 20
	var callbacks []string
	for i := range n {
		subject := fmt.Sprint("cust-", i)
		resp, err := http.Post(front.URL+"/v1/routes/bpce/consents/"+subject, "application/json", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		var start struct {
			AuthorizeURL string `json:"authorize_url"`
		}
		err = json.NewDecoder(resp.Body).Decode(&start)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || err != nil {
			t.Fatalf("start of %s: %d %v", subject, resp.StatusCode, err)
		}
		startReplica := resp.Header.Get("X-Test-Replica")
		landed, callbackReplica = nil, ""
		resp, err = browser.Get(start.AuthorizeURL + "&psu=" + url.QueryEscape(subject))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if landed == nil {
			t.Fatalf("consent %d: the browser did not reach the return URL: the callback answered %d %s",
				i, resp.StatusCode, resp.Header.Get("X-Tokenproxy-Error"))
		}
		if callbackReplica == startReplica {
			t.Fatalf("consent %d: started and completed on replica %s; the front should have moved on", i, startReplica)
		}
		if q := landed.Query(); q.Get("status") != "active" || q.Get("subject") != subject {
			t.Fatalf("consent %d (started on replica %s, callback on %s): return URL %s", i, startReplica, callbackReplica, landed.Redacted())
		}
		callbacks = append(callbacks, resp.Request.URL.String())
	}

	for i, x := range replicas {
		a := x.app(t, "")
		ans := a.api("GET", "/v1/routes/bpce/consents", nil)
		var list struct {
			Consents []struct{ Subject, Status string } `json:"consents"`
		}
		if err := json.Unmarshal(ans.body, &list); err != nil || len(list.Consents) != n {
			t.Fatalf("replica %d lists %d consents (%s); want %d", i, len(list.Consents), ans.body, n)
		}
		for _, c := range list.Consents {
			if c.Status != "active" {
				t.Fatalf("replica %d: %s is %s", i, c.Subject, c.Status)
			}
		}
		if got := a.account("cust-7"); got.status != http.StatusOK || psu(got) != "cust-7" {
			t.Fatalf("replica %d, cust-7's account: %d %q", i, got.status, psu(got))
		}
	}
	// A used state, replayed through the front, is refused by every replica.
	seen := map[string]bool{}
	for range 3 {
		resp, err := http.Get(callbacks[0])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Tokenproxy-Error") != "invalid_state" {
			t.Fatalf("a used state on replica %s: %d %s; want 400 invalid_state", resp.Header.Get("X-Test-Replica"),
				resp.StatusCode, resp.Header.Get("X-Tokenproxy-Error"))
		}
		seen[resp.Header.Get("X-Test-Replica")] = true
	}
	if len(seen) != 3 {
		t.Fatalf("the replayed state reached replicas %v; want all 3", seen)
	}
	t.Logf("%d consents started on one replica and completed on another: all active on each of 3 replicas", n)
}
