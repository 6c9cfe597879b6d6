package assemble_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
)

// A configuration with a bbolt consent store and an authorization_code
// route whose client certificate file is missing: the routes step fails
// after the consent store was opened.
func brokenRouteConfig(t *testing.T, dir string, certFile string) *config.Config {
	t.Helper()
	key := make([]byte, 32)
	key[0] = 7
	kf := filepath.Join(dir, "key")
	if err := os.WriteFile(kf, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `
routes:
  - name: bank
    hosts: [bank.example]
    upstream: https://bank.example
    client_certificate:
      pem: {cert_file: ` + certFile + `, key_file: ` + certFile + `}
    token:
      type: authorization_code
      url: https://bank.example/token
      client_id: app
      auth_method: tls_client_auth
      authorize_url: https://bank.example/authorize
consents:
  callback_url: http://127.0.0.1:9091/v1/callback
  store:
    bbolt: {path: ` + filepath.Join(dir, "consents.db") + `, key: {file: ` + kf + `}}
`
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	return cfg
}

// Open releases what it opened when a later step fails, and names the step;
// Close releases the consent store, so the next process can open it.
func TestOpenReleasesOnFailureAndClose(t *testing.T) {
	dir := t.TempDir()
	cfg := brokenRouteConfig(t, dir, filepath.Join(dir, "missing.pem"))
	_, err := assemble.Open(context.Background(), cfg, assemble.Setup{})
	var step *assemble.StepError
	if !errors.As(err, &step) || step.Step != assemble.StepRoutes || !strings.Contains(err.Error(), "client_certificate") {
		t.Fatalf("Open: %v; want a routes StepError naming the client certificate", err)
	}
	// The failed Open closed the consent store: opening it again does not
	// wait for bbolt's lock (it would fail with "held" after its timeout).
	a := assemble.New(cfg, assemble.Setup{})
	if err := a.OpenConsents(context.Background()); err != nil {
		t.Fatalf("the consent store is still held after a failed Open: %v", err)
	}
	if a.Consents == nil {
		t.Fatal("no consent store opened")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := assemble.New(cfg, assemble.Setup{})
	defer b.Close()
	if err := b.OpenConsents(context.Background()); err != nil {
		t.Fatalf("the consent store is still held after Close: %v", err)
	}
}
