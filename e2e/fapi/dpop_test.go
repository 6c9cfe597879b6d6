package fapi

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/fapitest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// dpopBank starts the certified server with a private_key_jwt client whose
// tokens are DPoP-bound, and a tokenproxy whose route signs assertions with
// an ES256 key and DPoP proofs with dpopLine's key.
func dpopBank(t *testing.T, fx *fixture, opts fapitest.Options, dpopLine, top string) (*fapitest.Server, *proc, signingKey) {
	t.Helper()
	ck := fx.key(t, "client", "ES256")
	client := codeClient(fapitest.PrivateKeyJWT, ck.pub)
	client.DPoP = true
	opts.Clients = []fapitest.Client{client}
	srv := fx.startBank(t, opts)
	p := fx.run(t, route{issuer: srv.Issuer, upstream: srv.RSURL, top: top, token: []string{
		"auth_method: private_key_jwt", "private_key: {file: " + ck.path + "}", dpopLine}})
	return srv, p, ck
}

// TestDPoPConsent: the consent through PAR with a DPoP key (ES256, PS256;
// from files, and in Vault Transit when a Vault dev server is at hand): the code is exchanged with a proof
// (after the authorization server's nonce challenge), the token is
// DPoP-bound, and the app's requests reach the resource server with
// Authorization: DPoP and a proof it verifies, a new jti each.
func TestDPoPConsent(t *testing.T) {
	skipShort(t)
	for _, alg := range []string{"ES256", "PS256", "vault-transit/ES256", "vault-transit/PS256"} {
		t.Run(alg, func(t *testing.T) {
			fx := newFixture(t)
			keys := []signingKey{}
			var line, top string
			if typ, ok := map[string]string{"vault-transit/ES256": "ecdsa-p256", "vault-transit/PS256": "rsa-2048"}[alg]; ok {
				v := vaulttest.Start(t)
				mount := vaulttest.Unique("transit")
				v.Mount(mount, "transit")
				v.Write(mount+"/keys/dpop", map[string]any{"type": typ})
				t.Setenv("TOKENPROXY_E2E_VAULT_TOKEN", v.Token)
				top = fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TOKENPROXY_E2E_VAULT_TOKEN}}}\n", v.Addr)
				line = fmt.Sprintf("dpop: {private_key: {vault_transit: {mount: %s, key: dpop}}}", mount)
			} else {
				dk := fx.key(t, "dpop", alg)
				keys = append(keys, dk)
				line = "dpop: {private_key: {file: " + dk.path + "}}"
			}
			srv, p, ck := dpopBank(t, fx, fapitest.Options{}, line, top)
			keys = append(keys, ck)

			p.consent(t, srv, "alice")
			for range 5 {
				checkResource(t, p, "alice", "dpop")
			}
			st := srv.Stats(t)
			if st.PARRequests != 1 || st.TokenRequests["authorization_code"] != 1 || st.RSAccepted != 5 {
				t.Fatalf("the bank saw PAR %d, code exchanges %d, resource requests accepted %d; rejections %+v",
					st.PARRequests, st.TokenRequests["authorization_code"], st.RSAccepted, st.Rejections)
			}
			if st.RSJTIRepeats != 0 || st.ASJTIRepeats != 0 {
				t.Fatalf("DPoP jti repeated: %d at the resource server, %d at the authorization server", st.RSJTIRepeats, st.ASJTIRepeats)
			}
			for _, r := range st.Rejections {
				if r.Reason != "use_dpop_nonce" {
					t.Fatalf("the bank refused %s at %s: %s", r.Reason, r.Endpoint, r.Detail)
				}
			}
			t.Logf("%s: nonce challenges: AS %d, RS %d; rejections %v", alg, st.ASNonceChallenges, st.RSNonceChallenges, append(st.Reasons("as"), st.Reasons("rs")...))
			checkNoLeak(t, st, keys, map[string][]byte{"the log": p.Logs(), "the metrics": p.metrics(t), "the app's bytes": p.appBytes()})
		})
	}
}

// loadResult is what a load saw.
type loadResult struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
	x5t        map[string]int // certificate thumbprints the resource server checked
}

func (r *loadResult) fail(s string) {
	r.failed.Add(1)
	r.mu.Lock()
	if len(r.failures) < 5 {
		r.failures = append(r.failures, s)
	}
	r.mu.Unlock()
}

// get is one app request for subject; it records the outcome.
func (r *loadResult) get(p *proc, subject string) {
	a, err := p.resource(subject)
	if err != nil {
		r.fail(err.Error())
		return
	}
	var s seen
	if a.status != http.StatusOK || json.Unmarshal(a.body, &s) != nil {
		r.fail(a.String())
		return
	}
	r.ok.Add(1)
	if s.X5t != "" {
		r.mu.Lock()
		r.x5t[s.X5t]++
		r.mu.Unlock()
	}
}

// steady runs workers that send the app's requests back to back until stop
// is closed.
func steady(p *proc, subject string, workers int, stop <-chan struct{}) (*loadResult, func()) {
	res := &loadResult{x5t: map[string]int{}}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				res.get(p, subject)
			}
		})
	}
	return res, wg.Wait
}

// TestDPoPRefreshUnderLoad: 500 concurrent app requests once the access
// token has expired make exactly one refresh at the authorization server;
// every request reaches the resource server with its own proof (no jti
// seen twice).
func TestDPoPRefreshUnderLoad(t *testing.T) {
	skipShort(t)
	fx := newFixture(t)
	dk := fx.key(t, "dpop", "ES256")
	// The token lives long enough that the burst (500 proofs for the
	// resource server to verify on the same cores: 1-6 s) ends within the
	// first half of the new token's life, before a refresh ahead is due.
	const ttl = 20 * time.Second
	srv, p, ck := dpopBank(t, fx, fapitest.Options{AccessTokenTTL: ttl}, "dpop: {private_key: {file: "+dk.path+"}}", "")
	p.consent(t, srv, "alice")
	issued := time.Now()
	checkResource(t, p, "alice", "dpop")

	// The token expires ttl after the exchange, whatever tokenproxy does.
	time.Sleep(time.Until(issued.Add(ttl + 300*time.Millisecond)))
	before := srv.Stats(t)
	res := &loadResult{x5t: map[string]int{}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 500 {
		wg.Go(func() { <-start; res.get(p, "alice") })
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)
	st := srv.Stats(t)
	refreshes := st.TokenRequests["refresh_token"] - before.TokenRequests["refresh_token"]
	t.Logf("500 concurrent requests after expiry: %d ok, %d failed in %v; refreshes %d; RS accepted %d, nonce challenges AS %d RS %d, jti repeats AS %d RS %d; RS refusals %v",
		res.ok.Load(), res.failed.Load(), took.Round(time.Millisecond), refreshes, st.RSAccepted-before.RSAccepted,
		st.ASNonceChallenges-before.ASNonceChallenges, st.RSNonceChallenges-before.RSNonceChallenges, st.ASJTIRepeats, st.RSJTIRepeats, st.RSRefused)
	if res.failed.Load() != 0 {
		t.Fatalf("%d app requests failed: %v", res.failed.Load(), res.failures)
	}
	if refreshes != 1 {
		t.Fatalf("%d refreshes at the authorization server, want 1", refreshes)
	}
	if st.RSJTIRepeats != 0 || st.ASJTIRepeats != 0 {
		t.Fatalf("DPoP jti repeated: %d at the resource server, %d at the authorization server", st.RSJTIRepeats, st.ASJTIRepeats)
	}
	if n := st.RSAccepted - before.RSAccepted; n != 500 {
		t.Fatalf("the resource server accepted %d requests, want 500", n)
	}
	checkNoLeak(t, st, []signingKey{dk, ck}, map[string][]byte{"the log": p.Logs(), "the metrics": p.metrics(t), "the app's bytes": p.appBytes()})
}

// TestNonceDance: the authorization server's and the resource server's
// DPoP nonces change every 2 s (only the current one accepted) while the
// app keeps 8 requests in flight for 10 s, with access tokens that live
// 6 s (a refresh, with its own nonce dance, every 3 s). No app
// request fails; each nonce change costs at most one retry per request in
// flight.
func TestNonceDance(t *testing.T) {
	skipShort(t)
	const (
		workers  = 8
		rotation = 2 * time.Second
		run      = 10 * time.Second
	)
	fx := newFixture(t)
	dk := fx.key(t, "dpop", "PS256")
	// Tokens live 6 s: the bank's exp counts whole seconds from its own
	// clock, so a token's real end may come up to a second before its
	// expires_in says, and a 3 s token's skew (capped at a quarter of its
	// life) cannot cover that under load.
	srv, p, ck := dpopBank(t, fx, fapitest.Options{AccessTokenTTL: 6 * time.Second, ASNonceRotation: rotation, RSNonceRotation: rotation},
		"dpop: {private_key: {file: "+dk.path+"}}", "")
	p.consent(t, srv, "alice")
	checkResource(t, p, "alice", "dpop")
	srv.ResetStats(t)

	stop := make(chan struct{})
	res, wait := steady(p, "alice", workers, stop)
	time.Sleep(run)
	close(stop)
	wait()
	st := srv.Stats(t)
	changes := int(run/rotation) + 1 // a change may fall at either end
	refreshes := st.TokenRequests["refresh_token"]
	t.Logf("%d s under %d workers, nonces changing every %v (≤ %d changes per server): %d ok, %d failed; refreshes %d; nonce challenges AS %d, RS %d; RS accepted %d; jti repeats AS %d RS %d; refusals AS %v RS %v",
		int(run.Seconds()), workers, rotation, changes, res.ok.Load(), res.failed.Load(), refreshes, st.ASNonceChallenges, st.RSNonceChallenges,
		st.RSAccepted, st.ASJTIRepeats, st.RSJTIRepeats, st.TokenErrors, st.RSRefused)
	if res.failed.Load() != 0 {
		t.Fatalf("%d app requests failed: %v", res.failed.Load(), res.failures)
	}
	if st.RSNonceChallenges == 0 || st.ASNonceChallenges == 0 || refreshes == 0 {
		t.Fatalf("no nonce dance happened: challenges AS %d RS %d, refreshes %d", st.ASNonceChallenges, st.RSNonceChallenges, refreshes)
	}
	// At the resource server: each request in flight when the nonce
	// changes, or prepared before tokenproxy saw the new one, is refused
	// once and sent again with the new nonce.
	if st.RSNonceChallenges > changes*workers {
		t.Fatalf("%d nonce challenges at the resource server for ≤ %d changes and %d requests in flight", st.RSNonceChallenges, changes, workers)
	}
	// At the authorization server: refreshes are single-flight, so at most
	// one challenge per token request.
	if st.ASNonceChallenges > refreshes {
		t.Fatalf("%d nonce challenges at the authorization server for %d refreshes", st.ASNonceChallenges, refreshes)
	}
	if st.RSJTIRepeats != 0 || st.ASJTIRepeats != 0 {
		t.Fatalf("DPoP jti repeated: %d at the resource server, %d at the authorization server", st.RSJTIRepeats, st.ASJTIRepeats)
	}
	checkNoLeak(t, st, []signingKey{dk, ck}, map[string][]byte{"the log": p.Logs(), "the metrics": p.metrics(t), "the app's bytes": p.appBytes()})
}

// TestCertificateRotationUnderLoad: tls_client_auth with certificate-bound
// tokens; the route's PEM files are replaced by a new certificate (same
// subject) while the app keeps 8 requests in flight. No app request fails,
// and the resource server comes to check the tokens against the new
// certificate.
func TestCertificateRotationUnderLoad(t *testing.T) {
	skipShort(t)
	const workers = 8
	fx := newFixture(t)
	client := codeClient(fapitest.TLSClientAuth)
	client.SubjectDN, client.CertificateBound = fapitest.SubjectDN(fx.cert.Leaf), true
	srv := fx.startBank(t, fapitest.Options{Clients: []fapitest.Client{client}})
	p := fx.run(t, route{issuer: srv.Issuer, upstream: srv.RSURL, token: []string{"auth_method: tls_client_auth", "certificate_bound: true"}})
	p.consent(t, srv, "alice")
	checkResource(t, p, "alice", "mtls")
	oldX5t := thumbprint(fx.cert.Leaf)

	stop := make(chan struct{})
	res, wait := steady(p, "alice", workers, stop)
	time.Sleep(time.Second)
	next, err := fx.ca.IssueClient("tpp.example")
	if err != nil {
		t.Fatal(err)
	}
	newX5t := thumbprint(next.Leaf)
	if _, err := pki.WriteFiles(fx.dir, "client", next, "x"); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	// Wait (at most 15 s) for the resource server to check a token
	// against the new certificate, then keep the load 2 s more.
	deadline := time.Now().Add(15 * time.Second)
	for {
		res.mu.Lock()
		n := res.x5t[newX5t]
		res.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wait()
			t.Fatalf("15 s after the rotation the resource server still sees only %v (old %s, new %s); failures %v", res.x5t, oldX5t, newX5t, res.failures)
		}
		time.Sleep(50 * time.Millisecond)
	}
	switched := time.Since(rotated)
	res.mu.Lock()
	oldAtSwitch, newAtSwitch := res.x5t[oldX5t], res.x5t[newX5t]
	res.mu.Unlock()
	time.Sleep(2 * time.Second)
	close(stop)
	wait()
	st := srv.Stats(t)
	t.Logf("rotation under %d workers: %d ok, %d failed; the RS first checked a token against the new certificate %v after the files changed (reload_interval 1s); RS checks against the old certificate %d (%d after that), the new %d (%d in the 2 s after); refreshes %d; RS refusals %v",
		workers, res.ok.Load(), res.failed.Load(), switched.Round(10*time.Millisecond), res.x5t[oldX5t], res.x5t[oldX5t]-oldAtSwitch,
		res.x5t[newX5t], res.x5t[newX5t]-newAtSwitch, st.TokenRequests["refresh_token"], st.RSRefused)
	if res.failed.Load() != 0 {
		t.Fatalf("%d app requests failed: %v", res.failed.Load(), res.failures)
	}
	if res.x5t[newX5t] == 0 {
		t.Fatal("the resource server never saw the new certificate")
	}
	if n := st.TokenRequests["refresh_token"]; n != 1 {
		t.Fatalf("%d refreshes across the rotation, want 1 (the consent's token fetched anew with the new certificate)", n)
	}
	// After the switch, only the new certificate is used.
	before := res.x5t[oldX5t]
	res2 := &loadResult{x5t: map[string]int{}}
	for range 20 {
		res2.get(p, "alice")
	}
	if res2.x5t[oldX5t] != 0 || res2.failed.Load() != 0 {
		t.Fatalf("after the rotation: %v, failures %v (old certificate seen %d times during the load)", res2.x5t, res2.failures, before)
	}
}

// thumbprint is a certificate's x5t#S256.
func thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
