// Package demo runs tokenproxy end to end against built-in bank emulators, on
// this machine only: it makes a CA and certificates in memory, starts
// emulators of Banking Circle's API and authorization hosts (mTLS required,
// short-lived tokens), a Berlin Group bank that checks signatures, a STET
// bank with its authorization server and a FAPI 2.0 bank (PAR, DPoP with
// rotating nonces), starts tokenproxy in front of them in
// this process, and sends requests through it with Go's stock HTTP client set
// up only by HTTP_PROXY. It prints what happened. Command tokenproxy-demo
// runs it; the production binary does not contain it.
package demo

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpproxy"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/emulator/berlingroup"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

const demoTTL = 3 * time.Second

// demoObserver counts token-cache events for the report.
type demoObserver struct{ hits, fetches atomic.Int64 }

func (o *demoObserver) TokenHit(string)                          { o.hits.Add(1) }
func (o *demoObserver) TokenFetch(string, string, time.Duration) { o.fetches.Add(1) }
func (o *demoObserver) LimiterWait(string, time.Duration)        {}
func (o *demoObserver) TokenThrottled(string)                    {}

// Options are the demo's settings.
type Options struct {
	// Serve keeps the emulators and tokenproxy running after the report,
	// until ctx ends, to try them with curl.
	Serve bool
	// Listen is tokenproxy's forward-proxy address; empty means a free
	// loopback port.
	Listen string
	// Log receives tokenproxy's log lines; nil discards them.
	Log *zap.Logger
}

// Run runs the demo and prints its report to out. It sets the process's
// proxy environment variables (HTTP_PROXY and the like) for the app it plays.
func Run(ctx context.Context, out io.Writer, o Options) (err error) {
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	p("tokenproxy demo: Banking Circle end to end, on this machine only\n")

	ca, serverCert, loaded, pfxSize, err := demoCertificates()
	if err != nil {
		return err
	}
	p("  made a test CA, the bank's server certificate and an RSA-2048 client certificate\n  (a %d-byte PKCS#12 file with a random passcode), all in memory", pfxSize)

	user, pass := "demo-m2m-user", randomString() //nolint:gosec // the demo emulator's user name; the password is random
	emu, err := bankingcircle.New(bankingcircle.Config{
		ServerCert: serverCert, ClientCAs: ca.CertPool(), Username: user, Password: pass, TokenTTL: demoTTL,
		TokenRequestsPerMinute: 30,
	})
	if err != nil {
		return err
	}
	if err := emu.Start(); err != nil {
		return err
	}
	defer emu.Close()
	p("  started the Banking Circle emulator: API %s, authorization %s\n  (client certificate required, tokens expire after %s, 30 token requests per minute per IP)", emu.APIURL(), emu.AuthURL(), demoTTL)

	// A Berlin Group bank that demands signed requests: its emulator checks
	// Digest, keyId, TPP-Signature-Certificate and the signature itself.
	qseal, err := ca.IssueClient("demo TPP QSealC", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		return err
	}
	bg := berlingroup.New(berlingroup.Config{Roots: ca.CertPool()})
	bgSrv := httptest.NewUnstartedServer(bg)
	bgSrv.TLS = &tls.Config{Certificates: []tls.Certificate{*serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	bgSrv.StartTLS()
	defer bgSrv.Close()
	p("  started a Berlin Group bank emulator at %s (signature, Digest and QSealC checked on every request)", bgSrv.URL)

	// The route: the bankingcircle-sandbox preset, pointed at the emulator.
	os.Setenv("TOKENPROXY_DEMO_USERNAME", user)
	os.Setenv("TOKENPROXY_DEMO_PASSWORD", pass)
	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	cfg := demoConfig(listen, emu, bgSrv.URL)
	cfg.ApplyDefaults()
	if err := errors.Join(cfg.Validate(), assemble.Check(cfg)); err != nil {
		return err
	}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	obs := &demoObserver{}
	srv, stop, err := serveInBackground(ctx, cfg, assemble.Setup{Log: log, TokenObserver: obs, RootCAs: ca.CertPool(),
		Certificates: map[string]certs.Source{
			"client": &certs.StaticSource{Cert: loaded, Desc: "in-memory PKCS#12"},
			"qsealc": &certs.StaticSource{Cert: qseal, Desc: "in-memory QSealC"},
		}})
	if err != nil {
		return err
	}
	defer stop(&err)
	proxyURL := "http://" + srv.Addr("proxy")
	p("  started tokenproxy, forward proxy at %s\n", proxyURL)

	app := demoApp(proxyURL)
	const accounts = "http://sandbox.bankingcircleconnect.com/api/v1/accounts?PageNumber=1&PageSize=50"
	p("The app is Go's net/http client with HTTP_PROXY=%s.", proxyURL)
	p("It calls %s\nwith no certificate, no password and no token.\n", accounts)

	served200, first, err := demoSteps(p, app, accounts, emu, obs)
	if err != nil {
		return err
	}
	signedURL, err := demoSigned(p, app, bg)
	if err != nil {
		return err
	}
	demoNoRoute(p, app)
	if err := demoSTET(ctx, p, ca, serverCert, loaded, qseal, log); err != nil {
		return err
	}
	if err := demoFAPI(ctx, p, ca, serverCert, log); err != nil {
		return err
	}
	demoSummary(p, emu, obs, served200, first)
	if o.Serve {
		demoServe(ctx, p, emu, proxyURL, signedURL)
		return nil
	}
	demoNext(p)
	return nil
}

// demoNext says what to do after the demo.
func demoNext(p func(string, ...any)) {
	p("\nNext: write a config (README.md, \"Banking Circle\"), check it with `tokenproxy validate --config FILE`, then `tokenproxy run --config FILE`.")
	p("Or keep the demo running and try it with curl: `go run ./cmd/tokenproxy-demo --serve --listen 127.0.0.1:8080`.")
}

// demoSummary prints what the bank saw and the first account.
func demoSummary(p func(string, ...any), emu *bankingcircle.Server, obs *demoObserver, served200 int64, first bankingcircle.AccountsPage) {
	st := emu.Stats()
	p("\nSummary: %d requests served, %d tokens fetched (%d token requests at the bank), %d answered from the cached token,",
		served200, st.TokensIssued, st.TokenRequests, obs.hits.Load())
	p("%d TLS handshakes with the client certificate; the bank rejected %d request(s) for a revoked token, each retried once with a new token.",
		st.Handshakes, st.APIUnauthorized)
	if len(first.Result) > 0 {
		a := first.Result[0]
		p("First account: %s, %s, %s, IBAN %s", a.AccountID, a.OwnedByCompanyName, a.Currency, strings.Join(a.IBANs[:1], ""))
	}
}

// demoServe keeps the demo serving until ctx ends, with curl examples.
func demoServe(ctx context.Context, p func(string, ...any), emu *bankingcircle.Server, proxyURL, signedURL string) {
	emu.SetTokenTTL(5 * time.Minute)
	p("\nServing until Ctrl-C. Try it with curl (which reads only the lowercase http_proxy):")
	p("  http_proxy=%s curl -s http://sandbox.bankingcircleconnect.com/api/v1/accounts", proxyURL)
	p("  http_proxy=%s curl -s -H 'PSU-ID: PSU-1' %s", proxyURL, signedURL)
	p("  http_proxy=%s curl -s http://example.com/            # no route: 403 with a JSON body", proxyURL)
	p("  curl -s -x %s https://sandbox.bankingcircleconnect.com/  # CONNECT: refused, with the reason", proxyURL)
	<-ctx.Done()
	p("stopping")
}

// demoConfig is the demo's configuration: the bankingcircle-sandbox preset
// pointed at the emulator, and a signed Berlin Group route.
func demoConfig(listen string, emu *bankingcircle.Server, bgURL string) *config.Config {
	return &config.Config{
		Listen: config.Listen{Proxy: listen, Admin: "off"},
		Routes: []config.Route{{
			Name: "bankingcircle", Preset: "bankingcircle-sandbox", Upstream: emu.APIURL(),
			ClientCert: config.ClientCertificate{InCode: "client"},
			Token: &config.Token{
				URL:       emu.AuthURL() + bankingcircle.AuthorizePath,
				Username:  secret.Ref{Env: "TOKENPROXY_DEMO_USERNAME"},
				Password:  secret.Ref{Env: "TOKENPROXY_DEMO_PASSWORD"},
				Skew:      500 * time.Millisecond,
				RateLimit: config.RateLimit{RequestsPerMinute: 20, Burst: 5},
			},
		}, {
			Name: "berlingroup", Hosts: []string{"psd2.bank.example"}, Upstream: bgURL,
			ClientCert: config.ClientCertificate{InCode: "client"},
			Signing: &config.Signing{
				SigningOptions: config.SigningOptions{Profile: "berlin-group"},
				Key:            config.ClientCertificate{InCode: "qsealc"},
			},
		}},
	}
}

// demoApp is the app: Go's stock client, configured only by the environment.
func demoApp(proxyURL string) *http.Client {
	os.Setenv("HTTP_PROXY", proxyURL)
	os.Setenv("http_proxy", proxyURL)
	os.Setenv("NO_PROXY", "")
	os.Setenv("no_proxy", "")
	// The standard environment proxy rules (those of http.ProxyFromEnvironment,
	// which reads the environment only once per process) read now, so that a
	// second demo in one process sees its own proxy.
	fromEnv := httpproxy.FromEnvironment().ProxyFunc()
	return &http.Client{Transport: &http.Transport{Proxy: func(r *http.Request) (*url.URL, error) { return fromEnv(r.URL) }}, Timeout: 20 * time.Second}
}

// demoNoRoute shows the answer for a host with no route (step 6).
func demoNoRoute(p func(string, ...any), app *http.Client) {
	resp, err := app.Get("http://example.com/")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p("  %-52s %d %s", "6. a host with no route: http://example.com/", resp.StatusCode, strings.TrimSpace(string(b)))
	}
}

// demoCertificates makes, in memory, a CA, the bank's server certificate and
// the M2M client certificate, delivered as a passcode-protected PKCS#12 file
// (its size is returned) and loaded from it.
func demoCertificates() (ca *pki.CA, server, client *tls.Certificate, pfxSize int, err error) {
	ca, err = pki.NewCA("tokenproxy demo CA")
	if err != nil {
		return nil, nil, nil, 0, err
	}
	server, err = ca.IssueServer([]string{"localhost", "sandbox.bankingcircleconnect.com"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, nil, 0, err
	}
	m2m, err := ca.IssueClient("demo-m2m-user", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		return nil, nil, nil, 0, err
	}
	passcode := randomString()
	pfx, err := pki.EncodePFX(m2m, passcode)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	client, err = certs.ParsePKCS12(pfx, passcode)
	if err != nil {
		return nil, nil, nil, 0, err
	}
	return ca, server, client, len(pfx), nil
}

// demoSteps runs the token-cache steps of the demo (1-4) and returns how many
// requests were served and the first page of accounts.
func demoSteps(p func(string, ...any), app *http.Client, accounts string, emu *bankingcircle.Server, obs *demoObserver) (int64, bankingcircle.AccountsPage, error) {
	var served200 atomic.Int64
	var first bankingcircle.AccountsPage
	call := func(n int, concurrent bool) (ok int, err error) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		one := func() {
			resp, err := app.Get(accounts)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				mu.Lock()
				firstErr = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
				mu.Unlock()
				return
			}
			served200.Add(1)
			mu.Lock()
			ok++
			if len(first.Result) == 0 {
				_ = json.Unmarshal(b, &first)
			}
			mu.Unlock()
		}
		for range n {
			if concurrent {
				wg.Go(one)
			} else {
				one()
			}
		}
		wg.Wait()
		return ok, firstErr
	}
	step := func(title string, n int, concurrent bool) error {
		before, hitsBefore := emu.Stats().TokenRequests, obs.hits.Load()
		ok, err := call(n, concurrent)
		if err != nil {
			return fmt.Errorf("%s: %w", title, err)
		}
		p("  %-52s %3d x 200   token requests sent: %d   cache hits: %d", title, ok, emu.Stats().TokenRequests-before, obs.hits.Load()-hitsBefore)
		return nil
	}
	if err := step("1. 20 concurrent requests, no token yet", 20, true); err != nil {
		return 0, first, err
	}
	if err := step("2. 10 more requests, token still valid", 10, false); err != nil {
		return 0, first, err
	}
	time.Sleep(demoTTL + 200*time.Millisecond)
	if err := step(fmt.Sprintf("3. after %s the token has expired: 10 concurrent", demoTTL), 10, true); err != nil {
		return 0, first, err
	}
	emu.RevokeTokens()
	if err := step("4. the bank revokes the token (401): 1 request", 1, false); err != nil {
		return 0, first, err
	}

	return served200.Load(), first, nil
}

// demoSigned makes the demo's signed Berlin Group call (step 5) and returns its URL.
func demoSigned(p func(string, ...any), app *http.Client, bg *berlingroup.Handler) (string, error) {
	signedURL := "http://psd2.bank.example/v1/sandbox/accounts/" + berlingroup.DefaultMockAccountID
	sreq, _ := http.NewRequest(http.MethodGet, signedURL, nil)
	sreq.Header.Set("PSU-ID", "PSU-1234")
	sresp, err := app.Do(sreq)
	if err != nil {
		return "", fmt.Errorf("signed request: %w", err)
	}
	sresp.Body.Close()
	acc, rej, _ := bg.Counts()
	p("  %-52s %d         accepted by the bank's signature check: %d, rejected: %d", "5. a Berlin Group call, signed by tokenproxy", sresp.StatusCode, acc, rej)
	if rec := bg.Received(); len(rec) > 0 {
		sig := rec[len(rec)-1].Header.Get("Signature")
		if i := strings.Index(sig, ",signature="); i > 0 {
			sig = sig[:i] + ",signature=..."
		}
		p("     Signature: %s", sig)
		p("     Digest: %s  X-Request-ID: %s", rec[len(rec)-1].Header.Get("Digest"), rec[len(rec)-1].Header.Get("X-Request-ID"))
	}

	return signedURL, nil
}

func randomString() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serveInBackground opens tokenproxy for cfg (assemble.Open), binds its
// listeners and serves them until the returned stop is called; stop
// releases the assembly and joins a listener's failure into *err, since a
// listener that failed is the cause of any failure seen meanwhile.
func serveInBackground(ctx context.Context, cfg *config.Config, setup assemble.Setup) (_ *proxy.Server, stop func(err *error), _ error) {
	a, err := assemble.Open(ctx, cfg, setup)
	if err != nil {
		return nil, nil, err
	}
	srv, err := a.Server()
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		_ = a.Close()
		return nil, nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	return srv, func(err *error) {
		cancel()
		if serr := <-served; serr != nil {
			*err = errors.Join(serr, *err)
		}
		_ = a.Close()
	}, nil
}
