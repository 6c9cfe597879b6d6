package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
)

// reloadEnv is one tokenproxy binary with a bank per route.
type reloadEnv struct {
	t     *testing.T
	bin   string
	dir   string
	path  string // the configuration file
	l     e2eenv.Listeners
	banks map[string]*e2eenv.Bank
	proc  *e2eenv.Proc
}

func startBanks(t *testing.T, dir string, names ...string) map[string]*e2eenv.Bank {
	t.Helper()
	banks := map[string]*e2eenv.Bank{}
	for _, n := range names {
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
	return banks
}

// routeYAML is one Banking Circle route named name for host name.test,
// against bank b, its local port on listen ("" for none).
func routeYAML(name string, b *e2eenv.Bank, listen string) string {
	y := fmt.Sprintf(`  - name: %s
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
      rate_limit: {requests_per_minute: 60, burst: 10}
`, name, name, b.Emu.APIURL(), b.CAFile, b.PFX, b.PasscodeFile, b.Emu.AuthURL(), bankingcircle.AuthorizePath, b.UsernameFile, b.PasswordFile)
	if listen != "" {
		y += "    listen: " + listen + "\n"
	}
	return y
}

func (e *reloadEnv) config(top string, routes ...string) string {
	return fmt.Sprintf("listen:\n  proxy: %s\n  admin: %s\nshutdown_grace: 5s\nlog: {level: info, format: json}\n%sroutes:\n%s",
		e.l.Proxy, e.l.Admin, top, strings.Join(routes, ""))
}

func (e *reloadEnv) write(yaml string) {
	e.t.Helper()
	// Replaced by a rename, as editors and the kubelet do.
	tmp := e.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.path); err != nil {
		e.t.Fatal(err)
	}
}

func startReloadEnv(t *testing.T, banks ...string) *reloadEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the tokenproxy binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l, err := e2eenv.NewListeners()
	if err != nil {
		t.Fatal(err)
	}
	return &reloadEnv{t: t, bin: bin, dir: dir, path: filepath.Join(dir, "tokenproxy.yaml"), l: l, banks: startBanks(t, dir, banks...)}
}

func (e *reloadEnv) run(yaml string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proc, err := e2eenv.Run(ctx, e.bin, e.dir, yaml, e.l)
	if err != nil {
		e.t.Fatal(err)
	}
	e.proc = proc
	e.t.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			e.t.Errorf("stopping tokenproxy: %v", err)
		}
		logs := string(proc.Logs())
		for _, b := range e.banks {
			for _, s := range append(b.Secrets(), b.Emu.IssuedTokens()...) {
				if strings.Contains(logs, s) {
					e.t.Errorf("tokenproxy's log holds a secret")
				}
			}
		}
		if e.t.Failed() {
			e.t.Logf("tokenproxy log:\n%s", logs)
		}
	})
}

// reloadCLI runs `tokenproxy reload` with args and env, and returns its
// output and exit code.
func (e *reloadEnv) reloadCLI(env []string, args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"reload"}, args...)...)
	cmd.Env = append(append(os.Environ(), "HTTP_PROXY=", "http_proxy=", "TOKENPROXY_RELOAD_TOKEN="), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return string(out), code
}

// metric reads one sample of the admin listener's /metrics.
func (e *reloadEnv) metric(name string) float64 {
	e.t.Helper()
	resp, err := http.Get("http://" + e.l.Admin + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// waitFor polls cond every 20 ms until it holds or d passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// load sends a steady stream of requests through the forward proxy, in
// turn to each route of targets (swappable while it runs), and tallies the
// answers.
type load struct {
	proxy   *url.URL
	targets atomic.Pointer[[]string]
	removed string // answers no_route once the reload removed it

	ok, failed, noRoute, skipped atomic.Int64
	mu                           sync.Mutex
	failures                     []string

	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(proxyAddr string, perSecond, workers int, removed string, targets ...string) *load {
	ld := &load{proxy: &url.URL{Scheme: "http", Host: proxyAddr}, removed: removed, stop: make(chan struct{})}
	ld.setTargets(targets...)
	jobs := make(chan string)
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(ld.proxy), MaxIdleConnsPerHost: workers}}
	for range workers {
		ld.wg.Go(func() {
			for name := range jobs {
				ld.do(client, name)
			}
		})
	}
	ld.wg.Go(func() {
		defer close(jobs)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-ld.stop:
				return
			case <-tick.C:
			}
			ts := *ld.targets.Load()
			select {
			case jobs <- ts[n%len(ts)]:
			default:
				ld.skipped.Add(1) // every worker busy: the load is not steady
			}
			n++
		}
	})
	return ld
}

func (ld *load) setTargets(t ...string) { ld.targets.Store(&t) }

func (ld *load) do(c *http.Client, name string) {
	resp, err := c.Get("http://" + name + ".test/api/v1/accounts")
	if err != nil {
		ld.fail(name + ": " + err.Error())
		return
	}
	_, rerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case rerr != nil:
		ld.fail(name + ": body: " + rerr.Error())
	case resp.StatusCode == http.StatusOK:
		ld.ok.Add(1)
	case name == ld.removed && resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-Tokenproxy-Error") == "no_route":
		ld.noRoute.Add(1)
	default:
		ld.fail(fmt.Sprintf("%s: %d %s", name, resp.StatusCode, resp.Header.Get("X-Tokenproxy-Error")))
	}
}

func (ld *load) fail(s string) {
	ld.failed.Add(1)
	ld.mu.Lock()
	if len(ld.failures) < 10 {
		ld.failures = append(ld.failures, s)
	}
	ld.mu.Unlock()
}

func (ld *load) end(t *testing.T) {
	close(ld.stop)
	ld.wg.Wait()
	t.Logf("load: %d ok, %d failed, %d no_route (removed route), %d ticks skipped", ld.ok.Load(), ld.failed.Load(), ld.noRoute.Load(), ld.skipped.Load())
	if n := ld.failed.Load(); n > 0 {
		t.Errorf("%d requests failed, first: %q", n, ld.failures)
	}
}

func tokenRequests(b *e2eenv.Bank) int { return b.Emu.Stats().TokenRequests }

// TestReloadUnderLoad reloads the binary's configuration while 200
// requests a second flow through three routes: one unchanged, one changed
// (its upstream moves to another bank), one removed, and one added.
func TestReloadUnderLoad(t *testing.T) {
	e := startReloadEnv(t, "a", "b", "b2", "c", "d")
	bk := e.banks
	cPort, err := e2eenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dPort, err := e2eenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	first := e.config("", routeYAML("a", bk["a"], ""), routeYAML("b", bk["b"], ""), routeYAML("c", bk["c"], cPort))
	e.run(first)

	ld := startLoad(e.l.Proxy, 200, 32, "c", "a", "b", "c")
	waitFor(t, 10*time.Second, "every route served", func() bool {
		return bk["a"].Emu.Stats().AccountsServed > 0 && bk["b"].Emu.Stats().AccountsServed > 0 && bk["c"].Emu.Stats().AccountsServed > 0
	})
	time.Sleep(time.Second) // steady load before the reload
	tokensA := tokenRequests(bk["a"])

	// 1. A reload with `tokenproxy reload` (the admin listener on loopback needs no credential).
	second := e.config("", routeYAML("a", bk["a"], ""), routeYAML("b", bk["b2"], ""), routeYAML("d", bk["d"], dPort))
	e.write(second)
	out, code := e.reloadCLI(nil, "--config", e.path)
	reloaded := time.Now()
	if code != 0 || !strings.Contains(out, "kept: a") || !strings.Contains(out, "rebuilt: b") || !strings.Contains(out, "added: d") || !strings.Contains(out, "removed: c") {
		t.Fatalf("tokenproxy reload: exit %d\n%s", code, out)
	}
	ld.setTargets("a", "b", "c", "d")
	waitFor(t, time.Second, "route b's new upstream serving", func() bool { return bk["b2"].Emu.Stats().AccountsServed > 0 })
	t.Logf("route b's new upstream served %s after the reload answered", time.Since(reloaded).Round(time.Millisecond))
	if resp, err := http.Get("http://" + dPort + "/api/v1/accounts"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("route d's new local port: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	waitFor(t, 6*time.Second, "route c's local port closed", func() bool {
		resp, err := http.Get("http://" + cPort + "/api/v1/accounts")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	time.Sleep(2 * time.Second) // steady load after the reload

	// 2. A configuration that does not build, by SIGHUP, changes nothing.
	tokens := map[string]int{}
	for _, n := range []string{"a", "b2", "d"} {
		tokens[n] = tokenRequests(bk[n])
	}
	broken := strings.Replace(second, bk["b2"].CAFile, filepath.Join(e.dir, "missing-ca.pem"), 1)
	e.write(broken)
	if err := e.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the failed reload counted", func() bool {
		return e.metric(`tokenproxy_config_reloads_total{result="failure"}`) == 1
	})
	// 3. Nor does one that does not decode.
	e.write(second + "  - name: x\n    upstrem: https://x.test\n")
	if out, code := e.reloadCLI(nil, "--admin", e.l.Admin); code != 1 || !strings.Contains(out, "reload failure") || !strings.Contains(out, "upstrem") {
		t.Fatalf("reload of an undecodable configuration: exit %d\n%s", code, out)
	}
	// 4. Nor one changing a setting that needs a restart.
	e.write(strings.Replace(second, "shutdown_grace: 5s", "shutdown_grace: 7s", 1))
	if out, code := e.reloadCLI(nil, "--admin", e.l.Admin); code != 1 || !strings.Contains(out, "reload refused") || !strings.Contains(out, "shutdown_grace") {
		t.Fatalf("reload of a restart-only setting: exit %d\n%s", code, out)
	}
	time.Sleep(time.Second) // load goes on over the refused reloads
	ld.end(t)

	if got := tokenRequests(bk["a"]); got != tokensA {
		t.Errorf("the unchanged route made %d token requests across the reloads, want 0", got-tokensA)
	}
	for n, before := range tokens {
		if got := tokenRequests(bk[n]); got != before {
			t.Errorf("route on bank %s made %d token requests across the failed reloads, want 0", n, got-before)
		}
	}
	if ld.noRoute.Load() == 0 {
		t.Error("no request reached the removed route after the swap")
	}
	for result, want := range map[string]float64{"success": 1, "failure": 2, "refused": 1} {
		if got := e.metric(`tokenproxy_config_reloads_total{result="` + result + `"}`); got != want {
			t.Errorf("tokenproxy_config_reloads_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	logs := string(e.proc.Logs())
	for _, want := range []string{"configuration reload failed", "missing-ca.pem", "configuration reload refused"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %q", want)
		}
	}
	t.Logf("token requests: a %d (unchanged route), b %d, b2 %d, c %d, d %d",
		tokenRequests(bk["a"]), tokenRequests(bk["b"]), tokenRequests(bk["b2"]), tokenRequests(bk["c"]), tokenRequests(bk["d"]))
}

// TestReloadCredential: an admin listener beyond loopback reloads only for
// the credential of admin.reload_token; without one configured, never.
func TestReloadCredential(t *testing.T) {
	e := startReloadEnv(t, "a")
	admin, err := e2eenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(admin, ":")
	e.l.Admin = "0.0.0.0:" + port
	token := e2eenv.Random("reload")
	t.Setenv("TEST_RELOAD_TOKEN", token)
	cfg := e.config("admin: {reload_token: {env: TEST_RELOAD_TOKEN}}\n", routeYAML("a", e.banks["a"], ""))
	e.run(cfg)

	out, code := e.reloadCLI(nil, "--admin", e.l.Admin)
	if code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("reload without the credential: exit %d\n%s", code, out)
	}
	out, code = e.reloadCLI([]string{"TOKENPROXY_RELOAD_TOKEN=wrong-" + token}, "--admin", e.l.Admin)
	if code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("reload with a wrong credential: exit %d\n%s", code, out)
	}
	tokenFile := filepath.Join(e.dir, "reload-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = e.reloadCLI(nil, "--config", e.path, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, "kept: a") {
		t.Fatalf("reload with the credential: exit %d\n%s", code, out)
	}
	// The configuration's own reference, resolved by the command.
	out, code = e.reloadCLI([]string{"TEST_RELOAD_TOKEN=" + token}, "--config", e.path)
	if code != 0 {
		t.Fatalf("reload with the configuration's credential: exit %d\n%s", code, out)
	}
	if strings.Contains(string(e.proc.Logs()), token) {
		t.Error("the log holds the reload credential")
	}
}

// TestReloadBeyondLoopbackNeedsCredential: without admin.reload_token, an
// admin listener beyond loopback refuses every reload (403).
func TestReloadBeyondLoopbackNeedsCredential(t *testing.T) {
	e := startReloadEnv(t, "a")
	_, port, _ := strings.Cut(e.l.Admin, ":")
	e.l.Admin = "0.0.0.0:" + port
	e.run(e.config("", routeYAML("a", e.banks["a"], "")))
	out, code := e.reloadCLI(nil, "--config", e.path)
	if code != 1 || !strings.Contains(out, "403 reload_forbidden") {
		t.Fatalf("reload beyond loopback without a credential configured: exit %d\n%s", code, out)
	}
}

// TestReloadWatch: with --watch semantics (reload.watch: true), replacing
// the file by a rename reloads it.
func TestReloadWatch(t *testing.T) {
	e := startReloadEnv(t, "a", "b")
	top := "reload: {watch: true, debounce: 100ms}\n"
	e.run(e.config(top, routeYAML("a", e.banks["a"], "")))
	e.write(e.config(top, routeYAML("a", e.banks["a"], ""), routeYAML("b", e.banks["b"], "")))
	waitFor(t, 5*time.Second, "the watched file reloaded", func() bool {
		return e.metric(`tokenproxy_config_reloads_total{result="success"}`) == 1
	})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: e.l.Proxy})}}
	resp, err := c.Get("http://b.test/api/v1/accounts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the added route answered %d", resp.StatusCode)
	}
}
