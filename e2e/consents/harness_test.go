package consents

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

const (
	bpceHost        = "api.bpce.example"
	bpceClientID    = "PSDFR-ACPR-13807"
	bpceQWAC        = "tpp.example QWAC"
	bpceKeyID       = "https://tpp.example/certs/qsealc.pem"
	returnURL       = "https://app.example/consent-done"
	bpceAccountsURL = "http://" + bpceHost + "/stet/psd2/v1/accounts"
	// replicaHeader is set by the front: which replica (1, 2, 3) answered.
	replicaHeader = "X-Test-Replica"
	// psuHeader is set by the bank: whose access token an account request carried.
	psuHeader = "X-Test-Psu"
)

// bank is the STET emulator with its authorization server over TLS, and
// the files a replica needs to use it.
type bank struct {
	emu *stet.Handler
	srv *httptest.Server
	ca  *pki.CA
	// files
	caFile, qwacCert, qwacKey, sealCert, sealKey string
}

func startBank(t *testing.T) *bank {
	t.Helper()
	ca, err := pki.NewCA("E2E STET bank CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	qwac, err := ca.IssueClient(bpceQWAC)
	if err != nil {
		t.Fatal(err)
	}
	seal, err := ca.IssueClient("TPP QSealC", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	qf, err := pki.WriteFiles(dir, "qwac", qwac, "x")
	if err != nil {
		t.Fatal(err)
	}
	sf, err := pki.WriteFiles(dir, "qseal", seal, "x")
	if err != nil {
		t.Fatal(err)
	}
	b := &bank{ca: ca, caFile: filepath.Join(dir, "ca.pem"), qwacCert: qf.Cert, qwacKey: qf.Key, sealCert: sf.Cert, sealKey: sf.Key}
	if err := ca.WriteCertFile(b.caFile); err != nil {
		t.Fatal(err)
	}
	b.emu = stet.New(stet.Config{Keys: map[string]crypto.PublicKey{bpceKeyID: seal.Leaf.PublicKey},
		OAuth: &stet.OAuthConfig{Clients: map[string]stet.Client{bpceClientID: {Method: "tls_client_auth", CertSubject: bpceQWAC}}}})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/stet/psd2/v1/") {
			if psu, ok := b.emu.CustomerOf(r.Header.Get("Authorization")); ok {
				w.Header().Set(psuHeader, psu)
			}
		}
		b.emu.ServeHTTP(w, r)
	})
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewUnstartedServer(h)
	// The customer's browser reaches the authorize endpoint without a client
	// certificate; the token endpoint refuses a request without one.
	b.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.CertPool()}
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

// tokensOf returns the Authorization headers of the account requests the
// bank received so far that carried a valid access token of psu.
func (b *bank) tokensOf(psu string) map[string]bool {
	out := map[string]bool{}
	for _, r := range b.emu.Received() {
		h := r.Header.Get("Authorization")
		if p, ok := b.emu.CustomerOf(h); ok && p == psu {
			out[h] = true
		}
	}
	return out
}

// sawSince counts the account requests the bank received at or after since
// that carried one of tokens (whether it accepted them or not).
func (b *bank) sawSince(tokens map[string]bool, since time.Time) int {
	n := 0
	for _, r := range b.emu.Received() {
		if !r.Time.Before(since) && tokens[r.Header.Get("Authorization")] {
			n++
		}
	}
	return n
}

// cluster is what the replicas share: one PostgreSQL database for the
// consents, one redis-server for the tokens, and their keys.
type cluster struct {
	pg                         *pgtest.Server
	db                         string
	redis                      *redistest.Server
	pgPassFile, consentKeyFile string
	redisKeyFile               string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	pg := pgtest.Start(t)
	c := &cluster{pg: pg, db: pg.NewDatabase(t), redis: redistest.Start(t)}
	dir := t.TempDir()
	c.pgPassFile = filepath.Join(dir, "pg.pass")
	c.consentKeyFile = filepath.Join(dir, "consent.key")
	c.redisKeyFile = filepath.Join(dir, "redis.key")
	for path, v := range map[string]string{c.pgPassFile: pg.Password(), c.consentKeyFile: hex.EncodeToString(randomKey(t)),
		c.redisKeyFile: base64.StdEncoding.EncodeToString(randomKey(t))} {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// query runs one SELECT on the consent database and returns its rows.
func (c *cluster) query(t *testing.T, sql string) [][][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, c.pg.DSN(c.db))
	if err != nil {
		t.Fatalf("connecting to postgres: %v", err)
	}
	defer conn.Close(ctx)
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	return res.Rows
}

// replica is one tokenproxy process: its configuration (fixed addresses,
// so that it restarts where it was) and, while it runs, its process.
type replica struct {
	name       string
	dir, yaml  string
	l          e2eenv.Listeners
	consentAPI string // base URL
	proc       *e2eenv.Proc
	app        *http.Client // through the replica's proxy listener
	// logs of the processes that ran before the current one
	past []byte
	// routeExtra and consentsExtra are YAML lines configure adds to the
	// route (indented 4 spaces) and to the consents block (2 spaces).
	routeExtra, consentsExtra string
}

// newReplica writes nothing yet: it picks the addresses and the YAML; the
// consent API's address is known before the front starts.
func newReplica(t *testing.T, name string) *replica {
	t.Helper()
	r := &replica{name: name, dir: t.TempDir()}
	for _, p := range []*string{&r.l.Proxy, &r.l.Admin, &r.l.Local} {
		a, err := e2eenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		*p = a
	}
	r.consentAPI = "http://" + r.l.Local
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: r.l.Proxy})}
	t.Cleanup(tr.CloseIdleConnections)
	r.app = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	return r
}

// configure writes the replica's configuration: the bank's route with
// authorization_code, the shared Redis, the shared Postgres consent store
// migrated at start-up, and the front's callback URL; then the replica's
// routeExtra and consentsExtra.
//
// The route has no revocation_url: the bank keeps honouring a deleted
// consent's access token, so only tokenproxy can stop it being used, and
// every request that carried it is one the bank answered.
func (r *replica) configure(b *bank, c *cluster, front string) {
	u := b.srv.URL + "/stet/psd2/oauth/"
	r.yaml = fmt.Sprintf(`listen: {proxy: %s, admin: %s}
shutdown_grace: 2s
log: {level: info, format: json}
store:
  kind: redis
  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: 3, poll_interval: 50ms}
routes:
  - name: bpce
    hosts: [%s]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
    signing:
      profile: stet
      key_id: %s
      key:
        pem: {cert_file: %s, key_file: %s}
    token:
      type: authorization_code
      url: %stoken
      client_id: %s
      auth_method: tls_client_auth
      scopes: [aisp]
      authorize_url: %sauthorize
      pkce: true
      refresh_ttl: 2160h
      max_wait: 10s
      rate_limit: {requests_per_minute: 6000, burst: 100}
%sconsents:
  listen: %s
  callback_url: %s/v1/callback
  return_urls: [%s]
  store:
    postgres:
      host: %s
      port: %d
      database: %s
      user: %s
      password: {file: %s}
      key: {file: %s}
      tls: {mode: disable}
      max_connections: 4
      migrate_on_start: true
%s`, r.l.Proxy, r.l.Admin, c.redis.Addr(), c.redisKeyFile,
		bpceHost, b.srv.URL, b.caFile, b.qwacCert, b.qwacKey, bpceKeyID, b.sealCert, b.sealKey,
		u, bpceClientID, u, r.routeExtra, r.l.Local, front, returnURL,
		c.pg.Host(), c.pg.Port(), c.db, pgtest.User, c.pgPassFile, c.consentKeyFile, r.consentsExtra)
}

// startAll starts every replica at once (they migrate the one database
// concurrently) and returns when each reports ready.
func startAll(t *testing.T, rs []*replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { r.proc, errs[i] = e2eenv.Run(ctx, binary, r.dir, r.yaml, r.l) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", rs[i].name, err)
		}
	}
}

// stopAll sends SIGTERM to every replica and checks that each exits cleanly.
func stopAll(t *testing.T, rs []*replica) {
	t.Helper()
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		if r.proc == nil {
			continue
		}
		wg.Go(func() { errs[i] = r.proc.Stop() })
	}
	wg.Wait()
	for i, r := range rs {
		if r.proc != nil {
			r.past = append(r.past, r.proc.Logs()...)
			r.proc = nil
		}
		if errs[i] != nil {
			t.Errorf("%s did not exit cleanly on SIGTERM: %v\n%s", r.name, errs[i], tail(r.past, 20))
		}
	}
}

// logs is everything every process of the replica wrote so far.
func (r *replica) logs() []byte {
	if r.proc == nil {
		return r.past
	}
	return append(append([]byte(nil), r.past...), r.proc.Logs()...)
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// answer is one HTTP answer, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}

// account calls the bank's accounts endpoint through the replica's proxy
// for subject.
func (r *replica) account(t *testing.T, subject string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, bpceAccountsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tokenproxy-Subject", subject)
	return do(t, r.app, req)
}

var plain = &http.Client{Timeout: 15 * time.Second}

// api calls the replica's consent API.
func (r *replica) api(t *testing.T, method, path string) answer {
	t.Helper()
	req, err := http.NewRequest(method, r.consentAPI+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, plain, req)
}

// listed returns the subjects the replica's consent API lists on the
// route, with their status.
func (r *replica) listed(t *testing.T) map[string]string {
	t.Helper()
	ans := r.api(t, http.MethodGet, "/v1/routes/bpce/consents")
	var list struct {
		Consents []struct{ Subject, Status string } `json:"consents"`
	}
	if ans.status != http.StatusOK || json.Unmarshal(ans.body, &list) != nil {
		t.Fatalf("%s: listing consents: %d %s", r.name, ans.status, ans.body)
	}
	out := map[string]string{}
	for _, c := range list.Consents {
		out[c.Subject] = c.Status
	}
	return out
}

// consentRequired reports whether ans is tokenproxy's 401 consent_required:
// a JSON error body naming the code and the route, the code in
// X-Tokenproxy-Error.
func consentRequired(ans answer) bool {
	var e struct{ Error, Message, Route string }
	return ans.status == http.StatusUnauthorized &&
		strings.HasPrefix(ans.header.Get("Content-Type"), "application/json") &&
		json.Unmarshal(ans.body, &e) == nil && e.Error == proxy.CodeConsentRequired && e.Message != "" && e.Route == "bpce" &&
		ans.header.Get(proxy.HeaderError) == proxy.CodeConsentRequired
}

// front is the round-robin load balancer in front of the replicas' consent
// APIs; the one callback_url names it. It tells in X-Test-Replica which
// replica (1, 2, 3) answered.
type front struct {
	srv      *httptest.Server
	backends []*httputil.ReverseProxy
	next     atomic.Uint64
}

func startFront(t *testing.T, rs []*replica) *front {
	t.Helper()
	f := &front{}
	for _, r := range rs {
		u, err := url.Parse(r.consentAPI)
		if err != nil {
			t.Fatal(err)
		}
		f.backends = append(f.backends, httputil.NewSingleHostReverseProxy(u))
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int((f.next.Add(1) - 1) % uint64(len(f.backends))) //nolint:gosec // G115: below 3
		w.Header().Set(replicaHeader, strconv.Itoa(i+1))
		f.backends[i].ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// consentLeg is where one consent's start and callback were answered.
type consentLeg struct{ start, callback string }

// consent starts a consent for subject through the front, then plays the
// customer's browser: it logs in at the bank as psu and follows the
// redirects through the front's callback to the app's return URL.
func (f *front) consent(t *testing.T, b *bank, subject, psu string) consentLeg {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/routes/bpce/consents/"+url.PathEscape(subject),
		bytes.NewReader([]byte(`{"return_url":"`+returnURL+`"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	ans := do(t, plain, req)
	var start struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	if ans.status != http.StatusCreated || json.Unmarshal(ans.body, &start) != nil || start.AuthorizeURL == "" {
		t.Fatalf("start of %s: %d %s", subject, ans.status, ans.body)
	}
	leg := consentLeg{start: ans.header.Get(replicaHeader)}
	var landed *url.URL
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.ca.CertPool()}}
	defer tr.CloseIdleConnections()
	browser := &http.Client{Timeout: 15 * time.Second, Transport: tr,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if req.URL.Host == "app.example" {
				landed, leg.callback = req.URL, req.Response.Header.Get(replicaHeader)
				return http.ErrUseLastResponse
			}
			return nil
		}}
	resp, err := browser.Get(start.AuthorizeURL + "&psu=" + url.QueryEscape(psu))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if landed == nil {
		t.Fatalf("consent of %s: the browser did not reach the return URL: the callback answered %d %s",
			subject, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
	}
	if q := landed.Query(); q.Get("status") != "active" || q.Get("subject") != subject {
		t.Fatalf("consent of %s (started on replica %s, callback on %s): return URL %s", subject, leg.start, leg.callback, landed.Redacted())
	}
	return leg
}
