package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

func redisConfig(addr, keyEnv string) *config.Config {
	cfg := &config.Config{Store: config.Store{Kind: config.StoreRedis, Redis: &config.Redis{
		Addresses: []string{addr}, EncryptionKey: secret.Ref{Env: keyEnv}, MaxReplicas: 2,
	}}}
	cfg.ApplyDefaults()
	return cfg
}

// `tokenproxy check` prints one line for the store: ok, or what is wrong
// with the field to fix (a wrong encryption key here).
func TestCheckStore(t *testing.T) {
	rs := redistest.Start(t)
	t.Setenv("TP_CHECK_KEY_A", base64.StdEncoding.EncodeToString(make([]byte, 32)))
	other := make([]byte, 32)
	other[31] = 9
	t.Setenv("TP_CHECK_KEY_B", base64.StdEncoding.EncodeToString(other))
	for _, tc := range []struct {
		name, env string
		failed    bool
		want      []string
	}{
		{"first key", "TP_CHECK_KEY_A", false, []string{"[ok  ]", "redis store", rs.Addr() + " reachable, encryption key matches"}},
		{"wrong key", "TP_CHECK_KEY_B", true, []string{"[FAIL]", "store.redis.encryption_key", "fix: give every replica the same key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			a := assemble.New(redisConfig(rs.Addr(), tc.env), assemble.Setup{Probe: true, ProbeTimeout: 5 * time.Second})
			defer a.Close()
			failed := checkStore(context.Background(), a, &out)
			if (a.Store != nil) == failed {
				t.Fatalf("store kept open: %v, failed: %v; want it open only when the check passed", a.Store != nil, failed)
			}
			if failed != tc.failed {
				t.Fatalf("failed = %v; want %v\n%s", failed, tc.failed, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output:\n%s\nwant it to contain %q", out.String(), w)
				}
			}
		})
	}
	var out bytes.Buffer
	a := assemble.New(&config.Config{Store: config.Store{Kind: config.StoreMemory}}, assemble.Setup{Probe: true})
	if failed := checkStore(context.Background(), a, &out); a.Store != nil || failed || out.Len() != 0 {
		t.Fatalf("memory store: %v, %v, %q; want nothing checked", a.Store, failed, out.String())
	}
}
