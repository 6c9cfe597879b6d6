package assemble_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

func bankRoute(name string, b *e2eenv.Bank, extra string) string {
	return fmt.Sprintf(`  - name: %s
    preset: bankingcircle-sandbox
    hosts: [%s.test]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pkcs12: {file: %s, passcode: {file: %s}}
    token:
      url: %s%s
      username: {file: %s}
      password: {file: %s}
      rate_limit: {requests_per_minute: 1000, burst: 100}
%s`, name, name, b.Emu.APIURL(), b.CAFile, b.PFX, b.PasscodeFile, b.Emu.AuthURL(), bankingcircle.AuthorizePath, b.UsernameFile, b.PasswordFile, extra)
}

// TestReloadsLeakNothing reloads 50 times, each rebuilding one route (its
// upstream moves between two banks) and adding or removing another with
// its own local port, with requests on every route in between: the
// goroutines, open files and heap of the process come back to where they
// were.
func TestReloadsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("50 reloads against real TLS upstreams")
	}
	dir := t.TempDir()
	banks := map[string]*e2eenv.Bank{}
	for _, n := range []string{"a", "b", "b2", "c"} {
		bd := filepath.Join(dir, n)
		if err := os.Mkdir(bd, 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := e2eenv.StartBank(bd, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		banks[n] = b
	}
	path := filepath.Join(dir, "tokenproxy.yaml")
	head := "listen: {proxy: 127.0.0.1:0, admin: 127.0.0.1:0}\nshutdown_grace: 5s\nroutes:\n"
	configs := []string{
		head + bankRoute("a", banks["a"], "") + bankRoute("b", banks["b"], "") + bankRoute("c", banks["c"], "    listen: 127.0.0.1:0\n"),
		head + bankRoute("a", banks["a"], "") + bankRoute("b", banks["b2"], ""),
	}
	write := func(i int) {
		if err := os.WriteFile(path, []byte(configs[i%2]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testlog.New(t)
	for _, b := range banks {
		logs.ForbidStrings(b.Secrets()...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := assemble.Open(ctx, cfg, assemble.Setup{Log: log, Metrics: metrics.New(), Load: func() (*config.Config, error) { return config.LoadFile(path) }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := a.Server()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		a.Close()
	})
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(route string) {
		t.Helper()
		resp, err := client.Get("http://" + route + ".test/api/v1/accounts")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("route %s: %d", route, resp.StatusCode)
		}
		if route == "c" {
			resp, err := http.Get("http://" + srv.Addr("route c") + "/api/v1/accounts")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	cycle := func(i int) {
		t.Helper()
		write(i)
		res := a.Reload(ctx, "test")
		if !res.OK() {
			t.Fatalf("reload %d: %s %s", i, res.Outcome, res.Error)
		}
		if !slices.Equal(res.Kept, []string{"a"}) || !slices.Equal(res.Rebuilt, []string{"b"}) {
			t.Fatalf("reload %d kept %v, rebuilt %v", i, res.Kept, res.Rebuilt)
		}
		get("a")
		get("b")
		if i%2 == 0 {
			get("c")
		}
	}
	get("a")
	get("b")
	get("c")
	for i := 1; i <= 4; i++ { // warm: every pool and listener once
		cycle(i)
	}
	g0, f0, h0 := settle(t)
	tokensA := banks["a"].Emu.Stats().TokenRequests
	start := time.Now()
	for i := 5; i < 55; i++ {
		cycle(i)
	}
	took := time.Since(start)
	tr.CloseIdleConnections()
	g1, f1, h1 := settle(t)
	t.Logf("50 reloads in %s (%s each, a request per route after each); goroutines %d -> %d, open fds %d -> %d, heap %d KiB -> %d KiB",
		took.Round(time.Millisecond), (took / 50).Round(time.Microsecond), g0, g1, f0, f1, h0>>10, h1>>10)
	if g1 > g0+5 {
		t.Errorf("goroutines grew from %d to %d over 50 reloads", g0, g1)
	}
	if f1 > f0+5 {
		t.Errorf("open files grew from %d to %d over 50 reloads", f0, f1)
	}
	if h1 > h0+4<<20 {
		t.Errorf("the heap grew from %d KiB to %d KiB over 50 reloads", h0>>10, h1>>10)
	}
	if got := banks["a"].Emu.Stats().TokenRequests; got != tokensA {
		t.Errorf("the unchanged route made %d token requests over 50 reloads", got-tokensA)
	}
	if last := a.LastReload(); last.Trigger != "test" || !last.OK() || last.Time.IsZero() {
		t.Errorf("LastReload = %+v", last)
	}
}

// settle waits until the goroutine count stops falling (retired routes and
// listeners drain, idle connections close) and returns it, the open files
// and the live heap.
func settle(t *testing.T) (goroutines, fds int, heap uint64) {
	t.Helper()
	prev, same := -1, 0
	deadline := time.Now().Add(15 * time.Second)
	for same < 5 && time.Now().Before(deadline) {
		n := runtime.NumGoroutine()
		if n == prev {
			same++
		} else {
			prev, same = n, 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return runtime.NumGoroutine(), len(ents), ms.HeapAlloc
}

// TestRestartSettings: each setting built once per process refuses a
// reload by name; routes and callers do not.
func TestRestartSettings(t *testing.T) {
	base := `listen: {proxy: 127.0.0.1:8080, admin: 127.0.0.1:9090}
routes:
  - name: bank
    hosts: [bank.test]
    upstream: https://bank.test
`
	cur, err := config.Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"same", base, nil},
		{"a route changed and one added", strings.Replace(base, "https://bank.test", "https://bank.test/v2", 1) +
			"  - {name: other, hosts: [other.test], upstream: https://other.test}\n", nil},
		{"proxy address", strings.Replace(base, "127.0.0.1:8080", "127.0.0.1:8081", 1), []string{"listen.proxy"}},
		{"admin address and log", strings.Replace(base, "127.0.0.1:9090", "127.0.0.1:9091", 1) + "log: {level: debug}\n", []string{"listen.admin", "log"}},
		{"store", base + "store: {kind: redis, redis: {addresses: [127.0.0.1:6379], encryption_key: {env: K}, max_replicas: 3}}\n", []string{"store"}},
		{"interception", base + "interception: {ca: {generate: {write_cert_to: /tmp/ca.crt}}}\n", []string{"interception"}},
		{"intercepted hosts", strings.Replace(base, "upstream: https://bank.test\n", "upstream: https://bank.test\n    intercept: true\n", 1) +
			"interception: {ca: {generate: {write_cert_to: /tmp/ca.crt}}}\n", []string{"interception", "routes[].intercept (the hosts intercepted)"}},
		{"reload credential", base + "admin: {reload_token: {env: T}}\n", []string{"admin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, err := config.Parse([]byte(tc.yaml))
			if err != nil {
				t.Fatalf("%v\n%s", err, tc.yaml)
			}
			if got := assemble.RestartSettings(cur, next); !slices.Equal(got, tc.want) {
				t.Fatalf("RestartSettings = %q, want %q", got, tc.want)
			}
		})
	}
}
