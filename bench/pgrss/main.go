// Command pgrss measures the resident memory of a tokenproxy process whose
// consent store is PostgreSQL: idle with an empty store and with one
// holding many consents (after the start-up census has walked them), then
// after serving growing numbers of distinct active subjects through an
// authorization_code route. The upstream API and its token endpoint are a
// local mTLS server that answers every refresh; the active subjects'
// consents are written to the store first. bench/pgscale.sh runs it; see
// docs/performance.md#postgres-consent-store.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// storeKey is BenchmarkPostgresScale's store key (07 × 32).
var storeKey = bytes.Repeat([]byte{7}, consentstore.KeySize)

const route = "bpce"

func main() {
	dsn := flag.String("dsn", "", "the store with -stored consents (BenchmarkPostgresScale's layout); the active subjects' consents are added to it")
	emptyDSN := flag.String("empty-dsn", "", "an empty database, for the baseline (migrated here)")
	stored := flag.Int("stored", 0, "consents already in -dsn")
	active := flag.String("active", "1000,10000", "cumulative numbers of distinct active subjects to serve")
	conc := flag.Int("concurrency", 16, "concurrent client requests while serving subjects")
	flag.Parse()
	if *dsn == "" || *emptyDSN == "" {
		fmt.Fprintln(os.Stderr, "pgrss: -dsn and -empty-dsn are required")
		os.Exit(64)
	}
	var steps []int
	for _, s := range strings.Split(*active, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "pgrss: -active: %q is not a count\n", s)
			os.Exit(64)
		}
		steps = append(steps, n)
	}
	if err := run(*dsn, *emptyDSN, *stored, steps, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "pgrss:", err)
		os.Exit(1)
	}
}

// openStore is the one place the tool opens the store.
func openStore(ctx context.Context, dsn string, maxConns int) (*consentstore.Postgres, error) {
	ring, err := consentstore.SingleKey(storeKey)
	if err != nil {
		return nil, err
	}
	return consentstore.OpenPostgres(ctx, consentstore.PostgresConfig{DSN: dsn, MaxConns: maxConns}, ring, true)
}

type env struct {
	dir, bin, caFile, pfx, passFile, keyFile string
	bank                                     *httptest.Server
	refreshes                                atomic.Int64
}

func run(dsn, emptyDSN string, stored int, steps []int, conc int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pgrss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir}
	if e.bin, err = e2eenv.Build(ctx, dir); err != nil {
		return err
	}
	if err := e.startBank(); err != nil {
		return err
	}
	defer e.bank.Close()

	// The baseline: the same configuration on an empty store.
	s, err := openStore(ctx, emptyDSN, 2)
	if err != nil {
		return fmt.Errorf("the empty database: %w", err)
	}
	_ = s.Close()
	fmt.Printf("%-44s %10s %10s\n", "tokenproxy process", "RSS MiB", "peak MiB")
	if err := e.idle(ctx, emptyDSN, 0); err != nil {
		return err
	}

	total := steps[len(steps)-1]
	if err := addActive(ctx, dsn, total); err != nil {
		return err
	}
	p, err := e.start(ctx, dsn, stored+total)
	if err != nil {
		return err
	}
	defer func() { _ = p.Stop() }()
	report(p, fmt.Sprintf("idle, %d stored consents, after the census", stored+total))
	done := 0
	for _, n := range steps {
		t0 := time.Now()
		if err := e.serve(p.L.Local, done, n, conc); err != nil {
			return fmt.Errorf("%w\n%s", err, tail(p.Logs()))
		}
		fmt.Printf("  (served subjects %d–%d in %s)\n", done, n-1, time.Since(t0).Round(time.Millisecond))
		done = n
		report(p, fmt.Sprintf("after serving %d distinct subjects", n))
	}
	fmt.Printf("refreshes answered by the token endpoint: %d\n", e.refreshes.Load())
	return nil
}

// idle runs tokenproxy on dsn until its census has counted want consents and reports its RSS.
func (e *env) idle(ctx context.Context, dsn string, want int) error {
	p, err := e.start(ctx, dsn, want)
	if err != nil {
		return err
	}
	report(p, fmt.Sprintf("idle, %d stored consents", want))
	return p.Stop()
}

// addActive stores n consents with no access token for subjects active-0 …,
// as a code exchange leaves them (sidecar mode: no owner).
func addActive(ctx context.Context, dsn string, n int) error {
	s, err := openStore(ctx, dsn, 16)
	if err != nil {
		return err
	}
	defer s.Close()
	now := time.Now().UTC()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c := &consentstore.Consent{Route: route, Subject: "active-" + strconv.Itoa(i), State: consentstore.Active,
					RefreshToken: secret.New("rt-active-" + strconv.Itoa(i)), RefreshExpiry: now.Add(90 * 24 * time.Hour),
					Scopes: []string{"aisp"}, Created: now}
				if _, err := s.Put(ctx, c, 0); err != nil && !errors.Is(err, consentstore.ErrConflict) {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return fmt.Errorf("storing the active subjects' consents: %w", err)
	default:
		return nil
	}
}

// startBank starts the mTLS API and token endpoint and writes the client's files.
func (e *env) startBank() error {
	ca, err := pki.NewCA("pgrss bank CA")
	if err != nil {
		return err
	}
	srvCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	cli, err := ca.IssueClient("pgrss client")
	if err != nil {
		return err
	}
	pass := e2eenv.Random("pass")
	f, err := pki.WriteFiles(e.dir, "client", cli, pass)
	if err != nil {
		return err
	}
	e.pfx, e.passFile, e.caFile, e.keyFile = f.PFX, filepath.Join(e.dir, "passcode"), filepath.Join(e.dir, "ca.pem"), filepath.Join(e.dir, "store.key")
	if err := ca.WriteCertFile(e.caFile); err != nil {
		return err
	}
	for path, v := range map[string]string{e.passFile: pass, e.keyFile: hex.EncodeToString(storeKey)} {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() != nil || r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") == "" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		n := e.refreshes.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("at-%d-%s", n, strings.Repeat("x", 40)),
			"token_type": "Bearer", "expires_in": 3600, "refresh_token": r.PostForm.Get("refresh_token")})
	})
	mux.HandleFunc("GET /accounts", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer at-") {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"accounts":[{"resourceId":"1","name":"current"}]}`)
	})
	e.bank = httptest.NewUnstartedServer(mux)
	e.bank.TLS = &tls.Config{Certificates: []tls.Certificate{*srvCert}, ClientCAs: ca.CertPool(), ClientAuth: tls.RequireAndVerifyClientCert}
	e.bank.StartTLS()
	return nil
}

// start runs tokenproxy on dsn and waits until its census has counted want consents.
func (e *env) start(ctx context.Context, dsn string, want int) (*e2eenv.Proc, error) {
	l, err := e2eenv.NewListeners()
	if err != nil {
		return nil, err
	}
	consents, err := e2eenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	y := fmt.Sprintf(`listen: {proxy: %s, admin: %s}
log: {level: warn, format: json}
routes:
  - name: %s
    upstream: %s
    listen: %s
    tls: {ca_file: %s}
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
    token:
      type: authorization_code
      url: %s/token
      client_id: PSDFR-ACPR-13807
      auth_method: tls_client_auth
      authorize_url: %s/authorize
      rate_limit: {requests_per_minute: 600000, burst: 1000}
consents:
  listen: %s
  callback_url: https://tokenproxy.example/v1/callback
  store:
    postgres:
      dsn: %q
      key: {file: %s}
`, l.Proxy, l.Admin, route, e.bank.URL, l.Local, e.caFile, e.pfx, e.passFile, e.bank.URL, e.bank.URL, consents, dsn, e.keyFile)
	p, err := e2eenv.Run(ctx, e.bin, e.dir, y, l)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	for {
		n, err := censusCount(l.Admin)
		if err == nil && n == want {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			_ = p.Stop()
			last := "none"
			if err != nil {
				last = err.Error()
			}
			return nil, fmt.Errorf("the census did not count %d consents in 10 minutes (last count %d, error %s)\n%s", want, n, last, tail(p.Logs()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("  (census of %d consents seen on /metrics %s after ready)\n", want, time.Since(t0).Round(time.Millisecond))
	return p, nil
}

// censusCount sums tokenproxy_consents on the admin listener's /metrics.
func censusCount(admin string) (int, error) {
	resp, err := http.Get("http://" + admin + "/metrics") //nolint:noctx // a local poll
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, seen := 0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tokenproxy_consents{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		n, seen = n+int(v), true
	}
	if !seen {
		return 0, errors.New("no census yet")
	}
	return n, sc.Err()
}

// serve sends one request for each subject active-from … active-(to-1) through the route's port.
func (e *env) serve(local string, from, to, conc int) error {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
	next := atomic.Int64{}
	next.Store(int64(from))
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				req, _ := http.NewRequest(http.MethodGet, "http://"+local+"/accounts", nil) //nolint:noctx // bounded by the client's timeout
				req.Header.Set("Tokenproxy-Subject", "active-"+strconv.Itoa(i))
				resp, err := c.Do(req)
				if err != nil {
					errc <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errc <- fmt.Errorf("subject active-%d: %s: %s", i, resp.Status, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// report prints the process's VmRSS and VmHWM.
func report(p *e2eenv.Proc, what string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		fmt.Printf("%-44s %v\n", what, err)
		return
	}
	var rss, hwm string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = fmt.Sprintf("%.1f", float64(kb)/1024)
		case "VmHWM":
			hwm = fmt.Sprintf("%.1f", float64(kb)/1024)
		}
	}
	fmt.Printf("%-44s %10s %10s\n", what, rss, hwm)
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
