package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// vaultDev is a private Vault dev server the soak stops and restarts. A dev
// server keeps everything in memory, so after a restart the soak writes the
// bank's password back, as an operator's provisioning would.
type vaultDev struct {
	bin, addr, token, tokenFile string
	port                        int
	cmd                         *exec.Cmd
	exit                        chan struct{}
}

// startVault starts a dev server from the binary ".ci/vault.sh build"
// cached, or returns nil and the reason when there is none.
func startVault(dir string) (*vaultDev, string) {
	bin, err := vaulttest.Binary()
	if err != nil {
		return nil, "no Vault binary (" + err.Error() + "); run .ci/vault.sh build"
	}
	addr, err := e2eenv.FreeAddr()
	if err != nil {
		return nil, err.Error()
	}
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	v := &vaultDev{bin: bin, port: port, addr: "http://" + addr, token: e2eenv.Random("root"),
		tokenFile: filepath.Join(dir, "vault-token")}
	if err := os.WriteFile(v.tokenFile, []byte(v.token), 0o600); err != nil {
		return nil, err.Error()
	}
	if err := v.start(); err != nil {
		return nil, err.Error()
	}
	return v, ""
}

func (v *vaultDev) start() error {
	v.cmd = exec.Command(v.bin, "server", "-dev", "-dev-root-token-id="+v.token, //nolint:gosec // the cached test binary
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(v.port), "-dev-no-store-token")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			v.cmd.Env = append(v.cmd.Env, kv)
		}
	}
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		return fmt.Errorf("starting vault: %w", err)
	}
	v.exit = make(chan struct{})
	go func() { _ = v.cmd.Wait(); close(v.exit) }()
	for range 400 {
		if resp, err := http.Get(v.addr + "/v1/sys/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("vault at %s not healthy after 20 s", v.addr)
}

// stop stops the server and waits for it.
func (v *vaultDev) stop() {
	if v.cmd == nil || v.cmd.Process == nil {
		return
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exit:
	case <-time.After(10 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.exit
	}
}

// put writes data to the KV v2 secret at secret/<path>.
func (v *vaultDev) put(ctx context.Context, path string, data map[string]string) error {
	body, _ := json.Marshal(map[string]any{"data": data})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.addr+"/v1/secret/data/"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("writing secret/%s: %w", path, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("writing secret/%s: HTTP %d", path, resp.StatusCode)
	}
	return nil
}

// configYAML is the top-level vault: block for tokenproxy.
func (v *vaultDev) configYAML() string {
	return fmt.Sprintf("vault:\n  address: %s\n  auth: {method: token, token: {file: %s}}\n", v.addr, v.tokenFile)
}

// cycle stops Vault for down, starts it again and restores the password,
// every period until ctx ends.
func (v *vaultDev) cycle(ctx context.Context, period, down time.Duration, restore func() error, tl *timeline) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
		v.stop()
		tl.add(event{at: time.Now(), note: "vault stopped"})
		select {
		case <-ctx.Done(): // leave Vault up for the drain
		case <-time.After(down):
		}
		from := time.Now()
		if err := v.start(); err != nil {
			tl.add(event{at: time.Now(), note: "vault restart failed: " + err.Error()})
			continue
		}
		if err := restore(); err != nil {
			tl.add(event{at: time.Now(), note: "vault restore failed: " + err.Error()})
		}
		tl.vaultEmpty(from, time.Now())
		tl.add(event{at: time.Now(), note: "vault restarted"})
		if ctx.Err() != nil {
			return
		}
	}
}
