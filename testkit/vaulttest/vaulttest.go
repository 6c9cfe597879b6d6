// Package vaulttest gives tests a real Vault dev server.
//
// Start uses the server named by VAULT_ADDR and VAULT_TOKEN (as .ci/run
// exports them after ".ci/vault.sh start"); without them it starts the
// binary that ".ci/vault.sh build" cached, on free 127.0.0.1 ports with a
// random root token, and stops it when the test ends. StartOwn always starts
// a private server, for tests that stop and restart it. With neither a server
// nor a binary the test is skipped, or fails when CI=true.
//
// Tests sharing a server must not clash: Unique gives mount and path names
// that no other test uses.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a Vault dev server for a test.
type Server struct {
	// Addr is the base URL, e.g. http://127.0.0.1:8200.
	Addr string
	// Token is a root token.
	Token string

	t    testing.TB
	bin  string
	port int
	own  bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
	out  *logBuffer
}

// Start returns the shared server from VAULT_ADDR/VAULT_TOKEN, or a private one.
func Start(t testing.TB) *Server {
	t.Helper()
	if addr, tok := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN"); addr != "" && tok != "" {
		s := &Server{Addr: strings.TrimRight(addr, "/"), Token: tok, t: t}
		if err := s.waitHealthy(5 * time.Second); err != nil {
			t.Fatalf("vaulttest: VAULT_ADDR=%s is set but Vault does not answer: %v", addr, err)
		}
		return s
	}
	return StartOwn(t)
}

// StartOwn starts a private dev server that the test may Stop and Restart.
func StartOwn(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("vaulttest: no Vault for the integration tests: %v", err)
		}
		t.Skipf("vaulttest: skipping, no Vault: %v (build it with .ci/vault.sh build, or set VAULT_ADDR and VAULT_TOKEN)", err)
	}
	s := &Server{Token: "root-" + randHex(8), t: t, bin: bin, own: true}
	var lastErr error
	for range 5 {
		if s.port, lastErr = freePortPair(); lastErr != nil {
			continue
		}
		s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
		if lastErr = s.launch(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("vaulttest: starting Vault: %v", lastErr)
	}
	t.Cleanup(s.Stop)
	return s
}

// Binary returns the path of the Vault binary: $TOKENPROXY_VAULT_BIN, else
// the one ".ci/vault.sh build" cached for the current tools/vaultdev go.mod/go.sum.
func Binary() (string, error) {
	if p := os.Getenv("TOKENPROXY_VAULT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("TOKENPROXY_VAULT_BIN: %w", err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, "tools", "vaultdev", f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	cache := os.Getenv("TOKENPROXY_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "tokenproxy")
	}
	p := filepath.Join(cache, "vaultdev-"+hex.EncodeToString(h.Sum(nil))[:16], "vault")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no Vault binary at %s", p)
	}
	return p, nil
}

// repoRoot walks up from the working directory to the directory holding tools/vaultdev.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "vaultdev", "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("tools/vaultdev not found above the working directory")
		}
		dir = parent
	}
}

// freePortPair finds a port p such that p and p+1 are free (the dev server binds both).
func freePortPair() (int, error) {
	// Vault binds the port and the next one. Pairs are drawn below Linux's
	// ephemeral range (32768-60999), where neighbouring ports are seldom taken.
	for range 200 {
		p := 20000 + 2*mrand.IntN(6000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free port pair on 127.0.0.1")
}

func (s *Server) launch() error {
	cmd := exec.Command(s.bin, "server", "-dev",
		"-dev-root-token-id="+s.Token,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(s.port),
		"-dev-no-store-token")
	// The server must not pick up the test's VAULT_* settings.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out := &logBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// Take the server down with the test binary if it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	s.mu.Lock()
	s.cmd, s.exit, s.out = cmd, exit, out
	s.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exit:
			return fmt.Errorf("vault exited: %s", out.tail())
		default:
		}
		if s.healthy() {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-exit
	return fmt.Errorf("vault not healthy after 20 s: %s", out.tail())
}

// logBuffer collects the server's output for failure messages.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

func (s *Server) healthy() bool {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(s.Addr + "/v1/sys/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (s *Server) waitHealthy(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if s.healthy() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("GET /v1/sys/health did not answer 200")
}

// Stop stops a private server (a no-op for the shared one) and waits until
// it has exited. A dev server keeps everything in memory: a restarted server
// starts empty.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
}

// Restart starts a stopped private server again on the same address with the
// same root token. Its storage is empty: set up mounts and secrets again.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.own {
		s.t.Fatal("vaulttest: Restart needs a server from StartOwn")
	}
	var err error
	for range 3 { // the port may take a moment to be released
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("vaulttest: restarting Vault: %v", err)
}

// Log returns the end of what a private server printed (for failure messages).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.tail()
}

// Client returns an api client with the root token.
func (s *Server) Client() *api.Client {
	s.t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		s.t.Fatalf("vaulttest: %v", err)
	}
	c.SetToken(s.Token)
	return c
}

// Unique returns prefix followed by a random suffix, for mount and path names.
func Unique(prefix string) string { return prefix + "-" + randHex(4) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Write writes data at path (a raw logical write) and fails the test on error.
func (s *Server) Write(path string, data map[string]any) *api.Secret {
	s.t.Helper()
	sec, err := s.Client().Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		s.t.Fatalf("vaulttest: writing %s: %v", path, err)
	}
	return sec
}

// Read reads path and fails the test on error.
func (s *Server) Read(path string) *api.Secret {
	s.t.Helper()
	sec, err := s.Client().Logical().ReadWithContext(context.Background(), path)
	if err != nil {
		s.t.Fatalf("vaulttest: reading %s: %v", path, err)
	}
	return sec
}

// Mount enables a secrets engine of type kind ("kv-v2", "pki", "transit")
// at path and removes it when the test ends.
func (s *Server) Mount(path, kind string) {
	s.t.Helper()
	in := &api.MountInput{Type: kind}
	if kind == "kv-v2" {
		in = &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}
	}
	if err := s.Client().Sys().MountWithContext(context.Background(), path, in); err != nil {
		s.t.Fatalf("vaulttest: mounting %s at %s: %v", kind, path, err)
	}
	s.t.Cleanup(func() { _ = s.Client().Sys().Unmount(path) })
}

// EnableAuth enables an auth method of type kind at path and removes it when the test ends.
func (s *Server) EnableAuth(path, kind string) {
	s.t.Helper()
	if err := s.Client().Sys().EnableAuthWithOptionsWithContext(context.Background(), path, &api.EnableAuthOptions{Type: kind}); err != nil {
		s.t.Fatalf("vaulttest: enabling %s auth at %s: %v", kind, path, err)
	}
	s.t.Cleanup(func() { _ = s.Client().Sys().DisableAuth(path) })
}

// PutKV writes data as a new version of the KV v2 secret mount/path and returns the version.
func (s *Server) PutKV(mount, path string, data map[string]any) int {
	s.t.Helper()
	sec, err := s.Client().KVv2(mount).Put(context.Background(), path, data)
	if err != nil {
		s.t.Fatalf("vaulttest: writing kv %s/%s: %v", mount, path, err)
	}
	return sec.VersionMetadata.Version
}

// Policy writes an ACL policy.
func (s *Server) Policy(name, hcl string) {
	s.t.Helper()
	if err := s.Client().Sys().PutPolicyWithContext(context.Background(), name, hcl); err != nil {
		s.t.Fatalf("vaulttest: writing policy %s: %v", name, err)
	}
}

// AppRole creates role name at auth/<mount> with the given settings (e.g.
// "token_ttl": "1h", "token_policies": "p") and returns its role ID and a
// new secret ID.
func (s *Server) AppRole(mount, name string, settings map[string]any) (roleID, secretID string) {
	s.t.Helper()
	s.Write("auth/"+mount+"/role/"+name, settings)
	r := s.Read("auth/" + mount + "/role/" + name + "/role-id")
	roleID, _ = r.Data["role_id"].(string)
	sec := s.Write("auth/"+mount+"/role/"+name+"/secret-id", nil)
	secretID, _ = sec.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		s.t.Fatalf("vaulttest: approle %s: no role_id or secret_id in Vault's answer", name)
	}
	return roleID, secretID
}
