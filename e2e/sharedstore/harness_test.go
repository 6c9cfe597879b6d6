package sharedstore

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

const (
	bcUser     = "m2m-user"
	bcPassword = "bank-password-e2e"
	bcPasscode = "pfx-passcode-e2e"
)

// bank is one Banking Circle emulator and the files a replica needs to use it.
type bank struct {
	emu                                   *bankingcircle.Server
	caFile, pfx, passcode, user, password string
	ttl                                   time.Duration
}

// startBank runs the emulator with tokens living ttl and, when perMinute >
// 0, a sliding per-minute threshold of token requests.
func startBank(t *testing.T, ttl time.Duration, perMinute int) *bank {
	t.Helper()
	ca, err := pki.NewCA("E2E Bank Root")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	emu, err := bankingcircle.New(bankingcircle.Config{ServerCert: serverCert, ClientCAs: ca.CertPool(),
		Username: bcUser, Password: bcPassword, TokenTTL: ttl, TokenRequestsPerMinute: perMinute})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	dir := t.TempDir()
	client, err := ca.IssueClient("tokenproxy-e2e")
	if err != nil {
		t.Fatal(err)
	}
	files, err := pki.WriteFiles(dir, "client", client, bcPasscode)
	if err != nil {
		t.Fatal(err)
	}
	b := &bank{emu: emu, caFile: filepath.Join(dir, "ca.pem"), pfx: files.PFX, ttl: ttl,
		passcode: filepath.Join(dir, "passcode"), user: filepath.Join(dir, "username"), password: filepath.Join(dir, "password")}
	if err := ca.WriteCertFile(b.caFile); err != nil {
		t.Fatal(err)
	}
	for path, v := range map[string]string{b.passcode: bcPasscode, b.user: bcUser, b.password: bcPassword} {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// cluster is the shared parts of several replicas: the Redis server and the
// encryption key file.
type cluster struct {
	redis   *redistest.Server
	keyFile string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	rs := redistest.Start(t)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "store-key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &cluster{redis: rs, keyFile: keyFile}
}

// replicaConfig is what differs between the tests' replicas.
type replicaConfig struct {
	perMinute, burst int
	maxWait          time.Duration
	maxReplicas      int
	cluster          *cluster // nil: the memory store
}

// replica is one running tokenproxy process.
type replica struct {
	name         string
	route, admin string // base URLs
	logFile      string
	cmd          *exec.Cmd
	done         chan struct{}
}

// startReplica writes the replica's configuration and runs the binary until
// the test ends; it returns once /readyz answers 200.
func startReplica(t *testing.T, name string, b *bank, rc replicaConfig) *replica {
	t.Helper()
	routePort, adminPort := freePort(t), freePort(t)
	yaml := fmt.Sprintf(`
listen:
  proxy: "off"
  admin: 127.0.0.1:%d
shutdown_grace: 1s
log: {level: info, format: json}
routes:
  - name: bankingcircle
    preset: bankingcircle-sandbox
    upstream: %s
    listen: 127.0.0.1:%d
    tls: {ca_file: %s}
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
    token:
      url: %s%s
      username: {file: %s}
      password: {file: %s}
      max_wait: %s
      rate_limit: {requests_per_minute: %d, burst: %d}
`, adminPort, b.emu.APIURL(), routePort, b.caFile, b.pfx, b.passcode, b.emu.AuthURL(), bankingcircle.AuthorizePath,
		b.user, b.password, rc.maxWait, rc.perMinute, rc.burst)
	if c := rc.cluster; c != nil {
		yaml += fmt.Sprintf(`
store:
  kind: redis
  redis:
    addresses: [%s]
    encryption_key: {file: %s}
    max_replicas: %d
    poll_interval: 50ms
    health_interval: 250ms
    dial_timeout: 500ms
    read_timeout: 500ms
`, c.redis.Addr(), c.keyFile, rc.maxReplicas)
	}
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "tokenproxy.yaml")
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, route: fmt.Sprintf("http://127.0.0.1:%d", routePort),
		admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), logFile: filepath.Join(dir, "log"), done: make(chan struct{})}
	logf, err := os.Create(r.logFile)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(binary, "run", "--config", cfgFile)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.done) }()
	t.Cleanup(func() { r.stop(t) })
	if err := r.waitReady(10 * time.Second); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, r.logs())
	}
	return r
}

func (r *replica) stop(t *testing.T) {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(os.Interrupt)
	}
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	if t.Failed() {
		t.Logf("%s log (tail):\n%s", r.name, tail(r.logs(), 30))
	}
}

func (r *replica) logs() string {
	b, _ := os.ReadFile(r.logFile)
	return string(b)
}

// waitReady polls /readyz until it answers 200 (bounded).
func (r *replica) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return fmt.Errorf("exited: %v", r.cmd.ProcessState)
		default:
		}
		if code, _ := getBody(r.admin + "/readyz"); code == http.StatusOK {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %v", within)
}

// readyz returns /readyz's status text ("ok", "degraded: ...").
func (r *replica) readyz() string {
	_, body := getBody(r.admin + "/readyz")
	return body
}

// metric returns the value line of one metric sample, "" when absent.
func (r *replica) metric(sample string) string {
	_, body := getBody(r.admin + "/metrics")
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return v
		}
	}
	return ""
}

// waitFor polls cond every 50 ms until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var plain = &http.Client{Timeout: 5 * time.Second}

func getBody(url string) (int, string) {
	resp, err := plain.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// result is one app request through a replica.
type result struct {
	replica    int
	start, end time.Time
	status     int
	code       string // X-Tokenproxy-Error
}

// appClient sends app requests; it keeps many connections per replica.
func appClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConnsPerHost: 2000, MaxConnsPerHost: 0, IdleConnTimeout: 30 * time.Second}}
}

// call sends one accounts request through r.
func call(ctx context.Context, c *http.Client, i int, r *replica) result {
	res := result{replica: i, start: time.Now()}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.route+bankingcircle.AccountsPath+"?PageNumber=1&PageSize=10", nil)
	resp, err := c.Do(req)
	if err != nil {
		res.end, res.code = time.Now(), "client: "+err.Error()
		return res
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	res.end, res.status, res.code = time.Now(), resp.StatusCode, resp.Header.Get("X-Tokenproxy-Error")
	return res
}

// load sends perSecond requests a second to each replica for d and returns
// every result once all are answered.
func load(ctx context.Context, replicas []*replica, perSecond int, d time.Duration) []result {
	c := appClient()
	var mu sync.Mutex
	var out []result
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	end := time.Now().Add(d)
	for now := range tick.C {
		if now.After(end) || ctx.Err() != nil {
			break
		}
		for i, r := range replicas {
			wg.Go(func() {
				res := call(ctx, c, i, r)
				mu.Lock()
				out = append(out, res)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
