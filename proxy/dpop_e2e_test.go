package proxy_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// startDPoP serves yaml (routes: the given route blocks) with a log that
// must hold no token the bank issued, and returns the app's client.
func startDPoP(t *testing.T, b *dpopBank, top string, routes ...string) (*app, *testlog.Capture) {
	t.Helper()
	yaml := top + "listen: {proxy: 127.0.0.1:0, admin: 'off'}\nroutes:" + strings.Join(routes, "")
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	log, logs := testlog.New(t)
	logs.Forbid(b.tokens)
	bo := assemble.Options{Log: log}
	st, err := assemble.OpenStore(context.Background(), cfg.Store, assemble.StoreOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if st != nil {
		bo.Store = st
		t.Cleanup(func() { st.Close() })
	}
	srv := serve(t, cfg, bo, proxy.Options{Log: log})
	return (&tp{proxyURL: &url.URL{Scheme: "http", Host: srv.Addr("proxy")}}).app(t, ""), logs
}

// get sends GET /v1/accounts to route name as the app, marked with id.
func (a *app) getAccounts(name, id string) answer {
	req, _ := http.NewRequest(http.MethodGet, "http://"+name+".example/v1/accounts", nil)
	req.Header.Set("X-Test-Req", id)
	// The app's own DPoP headers never reach the bank.
	req.Header.Set("DPoP", "app-proof")
	req.Header.Set("DPoP-Nonce", "app-nonce")
	return a.do(a.c, req)
}

// assertNoBinding checks that the app saw no token, proof or nonce.
func (a *app) assertNoDPoP(b *dpopBank) {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	toks := b.tokens()
	for _, s := range a.seen {
		if strings.Contains(s, "as-") || strings.Contains(s, "rs-") || strings.Contains(strings.ToLower(s), "dpop") {
			a.t.Fatalf("the app received a DPoP header or nonce: %q", s)
		}
		for _, tok := range toks {
			if strings.Contains(s, tok) {
				a.t.Fatal("the app received an access token")
			}
		}
	}
}

// run sends n requests from workers goroutines and returns the failures.
func (a *app) run(name string, workers int, more func(i int) bool) (sent int, failed []string) {
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if !more(i) {
					return
				}
				r := a.getAccounts(name, "req-"+strconv.Itoa(i))
				mu.Lock()
				sent++
				if r.status != http.StatusOK {
					failed = append(failed, fmt.Sprintf("%d %s", r.status, r.body))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return sent, failed
}

func dpopRoute(b *dpopBank, name, keyFile, extra string) string {
	return b.routeYAML(name, "      dpop: {private_key: {file: "+keyFile+"}"+extra+"}\n")
}

// Every proof the bank receives verifies (go-jose: signature by the jwk,
// typ, htm, htu without the query, iat, ath of the token, a jti never seen
// before), and tokens are sent as DPoP: 500 concurrent requests after the
// token expired share one refresh, each with its own proof.
func TestDPoPProofsVerifyAcrossExpiry(t *testing.T) {
	b := newDPoPBank(t, true)
	b.ttl.Store(1)
	app, _ := startDPoP(t, b, "", dpopRoute(b, "bank", writeECKey(t, b.dir, "dpop.pem"), ""))
	if r := app.getAccounts("bank", "first"); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	b.ttl.Store(300)
	time.Sleep(time.Second) // the first token's whole life: it has expired
	sent, failed := app.run("bank", 500, func(i int) bool { return i <= 500 })
	if len(failed) > 0 || sent != 500 {
		t.Fatalf("%d of %d failed: %v", len(failed), sent, failed[0])
	}
	tokens, bind, refused := b.counts()
	if tokens != 2 || bind != 0 || len(refused) != 0 {
		t.Fatalf("token requests %d (want 2), binding refusals %d, proofs refused %v", tokens, bind, refused)
	}
	if n := b.v.Seen(); n != 2+501 {
		t.Fatalf("%d distinct jti, want %d", n, 2+501)
	}
	app.assertNoDPoP(b)
}

// Both servers want a nonce that changes every 300 ms; under concurrent
// load with tokens refreshed every few hundred ms no app request fails, the
// token endpoint is asked once more at most per token request, and no app
// request is retried twice with the same nonce.
func TestDPoPNonceDanceUnderLoad(t *testing.T) {
	b := newDPoPBank(t, true)
	b.ttl.Store(1)
	b.nonceEvery = 300 * time.Millisecond
	app, _ := startDPoP(t, b, "", dpopRoute(b, "bank", writeECKey(t, b.dir, "dpop.pem"), ", algorithm: ES256"))
	end := time.Now().Add(3 * time.Second)
	sent, failed := app.run("bank", 16, func(int) bool { return time.Now().Before(end) })
	if len(failed) > 0 {
		t.Fatalf("%d of %d app requests failed: %v", len(failed), sent, failed[0])
	}
	tokens, _, refused := b.counts()
	b.mu.Lock()
	asRefused, asNonces, rsRefused := b.asNonceRefused, append([]string(nil), b.asRefusedNonces...), b.rsNonceRefused
	b.mu.Unlock()
	if len(refused) != 0 {
		t.Fatalf("proofs refused: %v", refused)
	}
	if asRefused == 0 {
		t.Fatal("the token endpoint never asked for a nonce")
	}
	seenAS := map[string]bool{}
	for _, n := range asNonces {
		if seenAS[n] {
			t.Fatalf("a token request was sent twice with the nonce %q", n)
		}
		seenAS[n] = true
	}
	retries := 0
	for id, ns := range rsRefused {
		seen := map[string]bool{}
		for _, n := range ns {
			if seen[n] {
				t.Fatalf("%s was sent twice with the nonce %q", id, n)
			}
			seen[n] = true
		}
		retries += len(ns)
	}
	if retries == 0 {
		t.Fatal("the resource server never asked for a nonce")
	}
	t.Logf("%d app requests, %d token requests (%d nonce refusals), %d resource nonce retries", sent, tokens, asRefused, retries)
	app.assertNoDPoP(b)
}

// A bank answering token_type Bearer to a DPoP token request is refused:
// the app gets the token error, the log says why.
func TestDPoPBearerAnswerRefused(t *testing.T) {
	b := newDPoPBank(t, true)
	b.bearer.Store(true)
	app, logs := startDPoP(t, b, "", dpopRoute(b, "bank", writeECKey(t, b.dir, "dpop.pem"), ""))
	r := app.getAccounts("bank", "1")
	if r.status == http.StatusOK {
		t.Fatal("a bearer token was used on a DPoP route")
	}
	if !strings.Contains(logs.String(), "not DPoP-bound") {
		t.Fatalf("the log does not say the token is not DPoP-bound:\n%s", logs.String())
	}
	b.mu.Lock()
	served := len(b.served)
	b.mu.Unlock()
	if served != 0 {
		t.Fatal("the resource server was called")
	}
}

// Two replicas share tokens through Redis but hold different DPoP keys: the
// second does not use the first's token (it is bound to the other key), it
// fetches its own; the bank never sees a token with the wrong key.
func TestDPoPSharedStoreBinding(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server")
	}
	rs := redistest.Start(t)
	keyFile := filepath.Join(t.TempDir(), "store.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(newKey(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	top := fmt.Sprintf("store:\n  kind: redis\n  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: 2, poll_interval: 50ms, key_prefix: %s}\n",
		rs.Addr(), keyFile, vaulttest.Unique("tp"))
	b := newDPoPBank(t, true)
	one, _ := startDPoP(t, b, top, dpopRoute(b, "bank", writeECKey(t, b.dir, "one.pem"), ""))
	two, _ := startDPoP(t, b, top, dpopRoute(b, "bank", writeECKey(t, b.dir, "two.pem"), ""))
	for i, a := range []*app{one, two, one, two} {
		if r := a.getAccounts("bank", strconv.Itoa(i)); r.status != http.StatusOK {
			t.Fatalf("replica %d: %d %s", i%2+1, r.status, r.body)
		}
	}
	tokens, bind, refused := b.counts()
	if tokens < 2 || bind != 0 || len(refused) != 0 {
		t.Fatalf("token requests %d (want 2 or more), tokens refused for their key %d, proofs refused %v", tokens, bind, refused)
	}
}

// Certificate-bound tokens across a rotation of the client certificate:
// under concurrent load no app request fails and the bank then sees the new
// certificate with a new token; with no load, a rotation alone fetches a
// token for the new certificate before any request needs it.
func TestCertificateBoundRotation(t *testing.T) {
	b := newDPoPBank(t, false)
	app, _ := startDPoP(t, b, "", b.routeYAML("bank", "      certificate_bound: true\n"))
	if r := app.getAccounts("bank", "first"); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	servedWith := func(cert string) (string, bool) {
		b.mu.Lock()
		defer b.mu.Unlock()
		for k := range b.served {
			if tok, c, _ := strings.Cut(k, "|"); c == cert {
				return tok, true
			}
		}
		return "", false
	}
	certOf := func() string {
		blk, _ := os.ReadFile(b.certFile)
		c, err := parseCertPEM(blk)
		if err != nil {
			t.Fatal(err)
		}
		return x5t(c.Raw)
	}
	oldCert := certOf()
	oldTok, _ := servedWith(oldCert)

	// Under load: 8 app goroutines until the bank served the new
	// certificate with a new token.
	var stop, started atomic.Bool
	var sent int
	var failed []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, failed = app.run("bank", 8, func(i int) bool {
			if i == 50 {
				started.Store(true)
			}
			return !stop.Load()
		})
	}()
	deadline := time.Now().Add(15 * time.Second)
	for !started.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	b.rotateClientCert()
	newCert := certOf()
	newTok, ok := servedWith(newCert)
	for ; !ok && time.Now().Before(deadline); newTok, ok = servedWith(newCert) {
		time.Sleep(5 * time.Millisecond)
	}
	stop.Store(true)
	<-done
	if len(failed) > 0 {
		t.Fatalf("%d of %d app requests failed across the rotation: %v", len(failed), sent, failed[0])
	}
	if !ok || newTok == oldTok {
		t.Fatal("the bank never saw the new certificate with a new token")
	}

	// No load: the rotation alone fetches the new certificate's token.
	tokensBefore, bindBefore, _ := b.counts()
	b.rotateClientCert()
	for tokens, _, _ := b.counts(); tokens == tokensBefore; tokens, _, _ = b.counts() {
		if time.Now().After(deadline) {
			t.Fatal("no token was fetched for the new certificate before a request needed it")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := app.getAccounts("bank", "after"); r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if _, bind, _ := b.counts(); bind != bindBefore {
		t.Fatal("the bank refused a token bound to the old certificate after the rotation")
	}
	if _, ok := servedWith(certOf()); !ok {
		t.Fatal("the request after the rotation did not present the new certificate")
	}
	t.Logf("%d app requests across the rotation", sent)
}
