package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const accountsURL = "http://" + bcHost + "/api/v1/accounts?PageNumber=1&PageSize=50"

// The real curl binary, configured only by http_proxy, gets the accounts
// through tokenproxy over real mTLS.
func TestCurlThroughProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is required in CI")
		}
		t.Skip("curl not installed")
	}
	h := newHarness(t, harnessOpts{})
	cmd := exec.Command(curl, "-sS", "--max-time", "20", "-w", "\n%{http_code}", "-H", "Accept: application/json", accountsURL)
	cmd.Env = []string{"http_proxy=" + h.proxyURL.String(), "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	i := strings.LastIndex(string(out), "\n")
	body, code := string(out)[:i], string(out)[i+1:]
	if code != "200" {
		t.Fatalf("curl got %s: %s", code, body)
	}
	var page bankingcircle.AccountsPage
	if err := json.Unmarshal([]byte(body), &page); err != nil || len(page.Result) == 0 {
		t.Fatalf("accounts JSON: %v: %s", err, body)
	}
	if page.Result[0].AccountID != "3fa85f64-5717-4562-b3fc-2c963f66afa6" {
		t.Fatalf("unexpected account %+v", page.Result[0])
	}
	if n := h.logs.Count(`"msg":"request"`, `"route":"bankingcircle"`, `"status":200`, `"path":"/api/v1/accounts"`, `"token":"fetch"`); n != 1 {
		t.Fatalf("%d request log lines for the curl call; log:\n%s", n, h.logs)
	}
	if strings.Contains(h.logs.String(), "PageNumber") {
		t.Fatal("the query string reached the log")
	}
	// The same through the route's local port, no proxy settings at all.
	local := exec.Command(curl, "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "http://"+h.srv.Addr("route bankingcircle")+"/api/v1/accounts")
	local.Env = []string{"PATH=" + os.Getenv("PATH")}
	if out, err := local.CombinedOutput(); err != nil || string(out) != "200" {
		t.Fatalf("local port: %v %s", err, out)
	}
}

// 1,000 concurrent requests arriving while the token is expired cause exactly
// one token request; while it is valid, none.
func TestThousandConcurrentOneFetch(t *testing.T) {
	h := newHarness(t, harnessOpts{emu: func(c *bankingcircle.Config) { c.TokenTTL = time.Second }})
	c := h.client()
	burst := func() {
		var wg sync.WaitGroup
		var failed atomic.Int64
		var firstErr atomic.Value
		for range 1000 {
			wg.Go(func() {
				resp, err := c.Get(accountsURL)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					failed.Add(1)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					firstErr.CompareAndSwap(nil, resp.Status+" "+resp.Header.Get(proxy.HeaderError))
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d of 1000 requests failed; first: %v", failed.Load(), firstErr.Load())
		}
	}
	if a := h.get(c, accountsURL); a.status != 200 { // a token that lives 1 s
		t.Fatalf("prime: %d", a.status)
	}
	h.emu.SetTokenTTL(300 * time.Second)
	cached, outcome, err := h.srv.Route("bankingcircle").Tokens.Get(context.Background(), "")
	if err != nil || h.emu.Stats().TokenRequests != 1 {
		t.Fatalf("reading the cached token (%v) sent a token request: %v", outcome, err)
	}
	// The cached token has expired by the clock the cache compares it with.
	waitFor(t, 5*time.Second, func() bool { return !time.Now().Before(cached.Expiry) })
	burst()
	if n := h.emu.Stats().TokenRequests; n != 2 {
		t.Fatalf("1,000 requests with an expired token sent %d token requests, want exactly 1", n-1)
	}
	burst() // token valid
	st := h.emu.Stats()
	if st.TokenRequests != 2 {
		t.Fatalf("1,000 requests with a valid token sent %d token requests, want 0", st.TokenRequests-2)
	}
	if st.AccountsServed != 2001 || st.APIUnauthorized != 0 {
		t.Fatalf("emulator stats %+v", st)
	}
}

// A token the upstream rejects is dropped, a new one fetched, and the
// request retried once, so the app sees only success.
func TestRejectedTokenReplaced(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	if a := h.get(c, accountsURL); a.status != 200 {
		t.Fatalf("first: %d %s", a.status, a.body)
	}
	h.emu.RevokeTokens()
	a := h.get(c, accountsURL)
	if a.status != 200 {
		t.Fatalf("after revocation: %d %s", a.status, a.body)
	}
	st := h.emu.Stats()
	if st.TokenRequests != 2 || st.APIUnauthorized != 1 {
		t.Fatalf("want 2 token requests and 1 upstream 401, got %+v", st)
	}
	if h.logs.Count(`"retried_after_401":true`) != 1 {
		t.Fatalf("retry not logged:\n%s", h.logs)
	}
}

// With the limiter at N per minute, a storm of forced refreshes sends at most
// N token requests, and apps promptly get 503 with Retry-After.
func TestForcedRefreshStormStaysInBudget(t *testing.T) {
	const budget = 4
	h := newHarness(t, harnessOpts{extraRoute: "      rate_limit: {requests_per_minute: 4, burst: 4}\n"})
	c := h.client()
	var ok, throttled atomic.Int64
	var slowest atomic.Int64
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				h.emu.RevokeTokens() // every token is rejected upstream: a refresh storm
				start := time.Now()
				resp, err := c.Get(accountsURL)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				resp.Body.Close()
				if d := int64(time.Since(start)); d > slowest.Load() {
					slowest.Store(d)
				}
				switch {
				case resp.StatusCode == 200:
					ok.Add(1)
				case resp.StatusCode == 503 && resp.Header.Get(proxy.HeaderError) == proxy.CodeTokenThrottled:
					ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
					if err != nil || ra < 1 {
						t.Errorf("503 without a usable Retry-After: %q", resp.Header.Get("Retry-After"))
					}
					throttled.Add(1)
				case resp.StatusCode == 401:
					// the token was revoked between the retry's fetch and its use
				default:
					t.Errorf("unexpected %d %s", resp.StatusCode, resp.Header.Get(proxy.HeaderError))
				}
			}
		})
	}
	wg.Wait()
	times := h.emu.TokenRequestTimes()
	if got := bankingcircle.MaxTokenRequestsInWindow(times, time.Minute); got > budget {
		t.Fatalf("%d token requests within a minute; budget %d", got, budget)
	}
	if throttled.Load() == 0 {
		t.Fatal("no app got a 503 during the storm")
	}
	if s := time.Duration(slowest.Load()); s > 5*time.Second {
		t.Fatalf("an app waited %v: the proxy hangs instead of answering 503", s)
	}
	t.Logf("storm: %d token requests, %d ok, %d throttled, slowest answer %v", len(times), ok.Load(), throttled.Load(), time.Duration(slowest.Load()))
}

// A 429 from the token endpoint: Retry-After is honoured and nothing is sent
// to it during the back-off.
func TestTokenEndpoint429(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.emu.ForceThrottle(1, 2*time.Second)
	c := h.client()
	a := h.get(c, accountsURL)
	if a.status != 503 || errorCode(t, a) != proxy.CodeTokenThrottled || a.header.Get("Retry-After") != "2" {
		t.Fatalf("first answer %d %v %s", a.status, a.header, a.body)
	}
	// During the back-off an app gets a 503, or, once the rest of the
	// back-off is shorter than max_wait, waits it out; nothing is sent early.
	// Apps keep asking, 10 times a second, until the next token request is sent.
	deadline := time.Now().Add(10 * time.Second)
	for len(h.emu.TokenRequestTimes()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no token request after the back-off")
		}
		a := h.get(c, accountsURL)
		if a.status != 503 && a.status != 200 {
			t.Fatalf("during back-off: %d %s", a.status, a.body)
		}
		time.Sleep(100 * time.Millisecond) // an app's pace, not a wait for tokenproxy
	}
	if a := h.get(c, accountsURL); a.status != 200 {
		t.Fatalf("after the back-off: %d %s", a.status, a.body)
	}
	times := h.emu.TokenRequestTimes()
	if len(times) < 2 || times[1].Sub(times[0]) < 1950*time.Millisecond {
		t.Fatalf("token requests at %v: one was sent during the 2 s back-off", times)
	}
	if n := h.emu.Stats().TokenRequests; n != 2 {
		t.Fatalf("token requests %d, want 2", n)
	}
}

// Replacing the PFX on disk moves new handshakes to the new certificate with
// no failed request; a corrupt replacement keeps the old one serving.
func TestCertificateRotationUnderLoad(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	var failures atomic.Int64
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(accountsURL)
				sent.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		})
	}
	// Load is running: requests succeed with the first certificate.
	waitFor(t, 5*time.Second, func() bool { return sent.Load() >= 20 })
	next, err := h.ca.IssueClient("tokenproxy-client-2", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	pfx, _ := pki.EncodePFX(next, bcPasscode)
	if err := pki.WriteFileAtomic(h.pfx, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	newFP := pki.Fingerprint(next.Leaf)
	waitFor(t, 5*time.Second, func() bool { return h.emu.Stats().HandshakesByFingerprint[newFP] > 0 })
	// Corrupt replacement while under load: the new certificate keeps serving.
	if err := pki.WriteFileAtomic(h.pfx, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return h.logs.Count("certificate reload failed") > 0 })
	// Load keeps running after the corrupt replacement was refused.
	mark := sent.Load()
	waitFor(t, 5*time.Second, func() bool { return sent.Load() >= mark+20 })
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed during rotation", failures.Load(), sent.Load())
	}
	if cn := h.srv.Route("bankingcircle").ClientCert.Load().Leaf.Subject.CommonName; cn != "tokenproxy-client-2" {
		t.Fatalf("after a corrupt replacement the route serves %q", cn)
	}
	// New connections after the corrupt write still present the second certificate.
	before := h.emu.Stats().HandshakesByFingerprint[newFP]
	h.srv.Route("bankingcircle").Transport.CloseIdleConnections()
	if a := h.get(c, accountsURL); a.status != 200 {
		t.Fatalf("after corrupt replacement: %d", a.status)
	}
	if h.emu.Stats().HandshakesByFingerprint[newFP] <= before {
		t.Fatal("new handshake did not use the rotated certificate")
	}
	t.Logf("%d requests during rotation, none failed", sent.Load())
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Requests tokenproxy refuses get a JSON body, the X-Tokenproxy-Error header
// and a fitting status.
func TestRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{extraRoute: "    max_body_bytes: 1024\n"})
	c := h.client()
	t.Run("unknown host", func(t *testing.T) {
		a := h.get(c, "http://example.com/")
		if a.status != 403 || errorCode(t, a) != proxy.CodeNoRoute || !strings.Contains(string(a.body), `\"example.com\"`) {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		hc := h.client()
		if resp, err := hc.Get("https://" + bcHost + "/api/v1/accounts"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			if err == nil {
				resp.Body.Close()
			}
			t.Fatalf("CONNECT was not refused: %v", err)
		}
		req, _ := http.NewRequest(http.MethodConnect, h.proxyURL.String(), nil)
		req.Host = bcHost + ":443"
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		if _, err := body.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 403 || resp.Header.Get(proxy.HeaderError) != proxy.CodeConnectRefused ||
			!strings.Contains(body.String(), "http://"+bcHost) {
			t.Fatalf("%d %s", resp.StatusCode, body.String())
		}
	})
	t.Run("body too large", func(t *testing.T) {
		resp, err := c.Post(accountsURL, "application/json", bytes.NewReader(make([]byte, 2048)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 413 || resp.Header.Get(proxy.HeaderError) != proxy.CodeBodyTooLarge {
			t.Fatalf("%d", resp.StatusCode)
		}
	})
	t.Run("not a proxy request", func(t *testing.T) {
		a := h.get(http.DefaultClient, h.proxyURL.String()+"/api/v1/accounts")
		if a.status != 400 || errorCode(t, a) != proxy.CodeNotProxyRequest {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})
	// The upstream accepts only the token tokenproxy fetched: were the app's
	// Authorization sent instead, it would answer 401 (twice, after the
	// retry). That the app's value is dropped even when no token is attached
	// is route.TestPrepareHeaderHygiene's to show.
	t.Run("app Authorization replaced", func(t *testing.T) {
		req, _ := http.NewRequest("GET", accountsURL, nil)
		req.Header.Set("Authorization", "Bearer app-own-token")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("app's Authorization reached the upstream: %d", resp.StatusCode)
		}
	})
	t.Run("upstream error passed through untouched", func(t *testing.T) {
		a := h.get(c, "http://"+bcHost+"/api/v1/no-such-endpoint")
		if a.status != 404 || a.header.Get(proxy.HeaderError) != "" {
			t.Fatalf("%d %v", a.status, a.header)
		}
	})
}

// Credential failures at the token endpoint give the app a 503 it can act on.
func TestTokenCredentialsRejected(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.emu.SetCredentials(bcUser, "another-password")
	a := h.get(h.client(), accountsURL)
	if a.status != 503 || errorCode(t, a) != proxy.CodeTokenRejected {
		t.Fatalf("%d %s", a.status, a.body)
	}
	if strings.Contains(string(a.body), bcPassword) {
		t.Fatal("password in response")
	}
}

// Upstream failures map to 502 and 504 with codes that tell them apart.
func TestUpstreamFailures(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		h := newHarness(t, harnessOpts{extraRoute: "    timeouts: {upstream: 300ms}\n"})
		c := h.client()
		if a := h.get(c, accountsURL); a.status != 200 {
			t.Fatalf("%d", a.status)
		}
		h.emu.SetAPILatency(2 * time.Second)
		a := h.get(c, accountsURL)
		if a.status != 504 || errorCode(t, a) != proxy.CodeUpstreamTimeout {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})
	t.Run("client certificate rejected", func(t *testing.T) {
		h := newHarness(t, harnessOpts{})
		other, _ := pki.NewCA("some other CA")
		h.emu.SetClientCAs(other.CertPool())
		a := h.get(h.client(), accountsURL)
		// The token fetch is the first mTLS exchange; it fails the same way.
		if a.status != 503 || errorCode(t, a) != proxy.CodeTokenUnavailable {
			t.Fatalf("%d %s", a.status, a.body)
		}
		if h.logs.Count("token request failed", "certificate") == 0 {
			t.Fatalf("cause not logged:\n%s", h.logs)
		}
	})
}

// SIGTERM-style shutdown lets an in-flight request finish and flips /readyz.
func TestDrain(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	if a := h.get(c, accountsURL); a.status != 200 {
		t.Fatal(a.status)
	}
	adminURL := "http://" + h.srv.Addr("admin") + "/readyz"
	if a := h.get(http.DefaultClient, adminURL); a.status != 200 {
		t.Fatalf("readyz %d", a.status)
	}
	h.emu.SetAPILatency(1500 * time.Millisecond)
	arrived := len(h.emu.Received())
	res := make(chan int, 1)
	go func() {
		resp, err := c.Get(accountsURL)
		if err != nil {
			res <- -1
			return
		}
		resp.Body.Close()
		res <- resp.StatusCode
	}()
	// The request is in flight: the upstream has it and holds it for 1.5 s.
	waitFor(t, 5*time.Second, func() bool { return len(h.emu.Received()) > arrived })
	h.cancel() // what SIGTERM does in `run`
	waitFor(t, 2*time.Second, func() bool {
		resp, err := http.Get(adminURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	if code := <-res; code != 200 {
		t.Fatalf("in-flight request got %d during drain", code)
	}
	h.cancel = nil
	if err := <-h.done; err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get(accountsURL); err == nil {
		resp.Body.Close()
		t.Fatal("proxy still accepting after drain")
	}
}

var _ = context.Background
var _ = errors.New

// A certificate within certificate_expiry_warning of its expiry is logged
// at start-up.
func TestExpiryWarning(t *testing.T) {
	h := newHarness(t, harnessOpts{top: "certificate_expiry_warning: 48h\n"}) // test certificates live 24 h
	waitFor(t, 2*time.Second, func() bool {
		return h.logs.Count(`"msg":"certificate expires soon; rotate it"`, `"route":"bankingcircle"`, `"certificate":"client"`) == 1
	})
	quiet := newHarness(t, harnessOpts{top: "certificate_expiry_warning: 1h\n"})
	// The check logs that it ran; only after it has may silence mean something.
	waitFor(t, 2*time.Second, func() bool { return quiet.logs.Count(`"msg":"certificate expiry checked"`) >= 1 })
	if quiet.logs.Count("certificate expires soon") != 0 {
		t.Fatal("warned about a certificate outside the window")
	}
}
