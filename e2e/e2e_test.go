// Package e2e drives the released tokenproxy binary — built with go build,
// configured by a YAML file, run as `tokenproxy run` — from outside, over
// raw TCP, in front of an in-process Banking Circle emulator that records
// every request it receives.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
)

// The binary is built once for the package's tests.
var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	errBuild  error
)

func binary(ctx context.Context) (string, error) {
	buildOnce.Do(func() {
		if binDir, errBuild = os.MkdirTemp("", "tokenproxy-e2e-"); errBuild != nil {
			return
		}
		binPath, errBuild = e2eenv.Build(ctx, binDir)
	})
	return binPath, errBuild
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// env is one tokenproxy process with its bank, shared by a test's cases.
type env struct {
	bank *e2eenv.Bank
	proc *e2eenv.Proc
}

// bigAccounts makes the accounts list large (several MiB at PageSize=5000)
// so that a client that stops reading fills every buffer on the way.
func bigAccounts() []bankingcircle.Account {
	base := bankingcircle.DefaultAccounts()[0]
	out := make([]bankingcircle.Account, 200)
	for i := range out {
		out[i] = base
		out[i].AccountDescription = strings.Repeat("x", 32<<10)
	}
	return out
}

func start(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the tokenproxy binary")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := binary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bank, err := e2eenv.StartBank(dir, func(c *bankingcircle.Config) { c.Accounts = bigAccounts() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bank.Close() })
	l, err := e2eenv.NewListeners()
	if err != nil {
		t.Fatal(err)
	}
	proc, err := e2eenv.Run(ctx, bin, dir, bank.Config(l, e2eenv.ConfigOptions{RatePerMinute: 60, Burst: 10}), l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			t.Errorf("stopping tokenproxy: %v", err)
		}
		logs := string(proc.Logs())
		for _, s := range append(bank.Secrets(), bank.Emu.IssuedTokens()...) {
			if strings.Contains(logs, s) {
				t.Errorf("tokenproxy's log holds a secret")
			}
		}
		if t.Failed() {
			t.Logf("tokenproxy log:\n%s", logs)
		}
	})
	return &env{bank: bank, proc: proc}
}

// exchange is what one raw connection got back.
type exchange struct {
	responses []*http.Response // bodies already read and closed
	bodies    [][]byte
	closed    bool  // the server closed the connection after the responses
	err       error // a read error other than EOF (timeout, reset)
}

// send writes payload on a new connection to addr and reads answers until
// the server closes the connection or wait passes without one.
func send(t *testing.T, addr, payload string, wait time.Duration) exchange {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Write while reading: a server that refuses a request part-way stops
	// reading, and the answer must not wait behind a blocked write.
	go io.WriteString(c, payload) //nolint:errcheck // a refused request may not be read to its end
	return readAll(c, wait)
}

func readAll(c net.Conn, wait time.Duration) exchange {
	var ex exchange
	br := bufio.NewReader(c)
	for range 16 {
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			ex.err = err
			return ex
		}
		if _, err := br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) {
				ex.closed = true
			} else {
				ex.err = err
			}
			return ex
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			ex.err = err
			return ex
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			ex.err = err
			return ex
		}
		ex.responses = append(ex.responses, resp) //nolint:bodyclose // closed above, after reading
		ex.bodies = append(ex.bodies, body)
	}
	return ex
}

func (ex exchange) statuses() []int {
	var out []int
	for _, r := range ex.responses {
		out = append(out, r.StatusCode)
	}
	return out
}

// tokenproxyError returns the code of tokenproxy's own JSON error answer
// ("" when the answer is not one): header and body must agree.
func tokenproxyError(resp *http.Response, body []byte) string {
	code := resp.Header.Get("X-Tokenproxy-Error")
	var e struct{ Error, Message string }
	if code == "" || json.Unmarshal(body, &e) != nil || e.Error != code || e.Message == "" {
		return ""
	}
	return code
}

// hopHeaders must never reach the bank.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// checkReceived asserts that every request the bank received is well formed:
// a path under /api/, the bank's own host, no hop-by-hop header, no
// userinfo, the route's bearer token and nothing smuggled in a body.
func checkReceived(t *testing.T, got []bankingcircle.Received, apiHost string) {
	t.Helper()
	for i, r := range got {
		bad := func(format string, a ...any) {
			t.Helper()
			t.Errorf("bank request %d (%s %.80q): "+format, append([]any{i, r.Method, r.RequestURI}, a...)...)
		}
		if !strings.HasPrefix(r.RequestURI, "/api/") {
			bad("request target is not an origin-form path under /api/")
		}
		if r.Host != apiHost {
			bad("Host %q, want the bank's %q", r.Host, apiHost)
		}
		for _, h := range hopHeaders {
			if _, ok := r.Header[h]; ok {
				bad("carries hop-by-hop header %s", h)
			}
		}
		if len(r.TransferEncoding) > 0 && r.Header.Get("Content-Length") != "" {
			bad("both Transfer-Encoding and Content-Length")
		}
		if a := r.Header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer [redacted]" {
			bad("Authorization %q, want one bearer token", a)
		}
		if strings.Contains(r.RequestURI, "@") || strings.Contains(strings.ToLower(r.RequestURI), "http") {
			bad("request target carries a URL or userinfo")
		}
		if strings.Contains(string(r.Body), "HTTP/1.") {
			bad("body holds what looks like a smuggled request: %.80q", r.Body)
		}
	}
}
