package main

import (
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the bank's token thumbprint, an identifier
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
)

// Process groups.
const (
	groupSidecar = "sidecar"
	groupGateway = "gateway"
)

// member is one tokenproxy process of the run.
type member struct {
	name, group string
	proc        *e2eenv.Proc
	proxyURL    string // what the app clients put in HTTP_PROXY
}

// cluster is what the gateway replicas share: Redis, the store's key, the
// caller's password and their own client certificate (so that the bank's
// tokens can be told apart from the sidecar's by their thumbprint).
type cluster struct {
	redis           *redisDev
	bank            *e2eenv.Bank // a copy of the sidecar's, with its own certificate files
	key, callerPW   string
	keyFile, pwFile string
}

// budgets splits the bank's per-minute threshold: the sidecar's share and
// the cluster's; together they never exceed o.budget.
func budgets(o options) (sidecar, gateway int) {
	if o.replicas <= 1 {
		return o.budget, 0
	}
	return o.budget / 2, o.budget - o.budget/2
}

// startCluster starts Redis and o.replicas gateway replicas against h.bank.
func (h *harness) startCluster(ctx context.Context, o options, bin string, co e2eenv.ConfigOptions) error {
	dir := filepath.Join(h.dir, "cluster")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	c := &cluster{key: randomKey(), callerPW: e2eenv.Random("caller"),
		keyFile: filepath.Join(dir, "store-key"), pwFile: filepath.Join(dir, "caller-password")}
	for path, v := range map[string]string{c.keyFile: c.key, c.pwFile: c.callerPW} {
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			return err
		}
	}
	cb := *h.bank
	cb.Dir = dir
	if err := cb.RotateClient("gateway client"); err != nil {
		return err
	}
	c.bank = &cb
	h.notePrint(dir, groupGateway)
	var err error
	if c.redis, err = startRedis(h.dir); err != nil {
		return err
	}
	h.cluster = c
	_, share := budgets(o)
	co.RatePerMinute, co.Burst = share, min(8, share)
	h.caps, h.bursts = append(h.caps, share), append(h.bursts, co.Burst)
	co.Route = append(co.Route, "allow: {cidrs: [127.0.0.0/8], callers: [soak]}")
	co.Top += fmt.Sprintf(`callers:
  - {name: soak, password: {file: %s}}
store:
  kind: redis
  redis:
    addresses: [%s]
    encryption_key: {file: %s}
    max_replicas: %d
    poll_interval: 100ms
    health_interval: 500ms
    dial_timeout: 500ms
    read_timeout: 500ms
`, c.pwFile, c.redis.addr, c.keyFile, o.replicas)
	for i := range o.replicas {
		l, err := e2eenv.NewListeners()
		if err != nil {
			return err
		}
		yaml := strings.Replace(c.bank.Config(l, co), "listen:\n", "listen:\n  allow_non_loopback: true\n", 1)
		rdir := filepath.Join(dir, fmt.Sprintf("gw%d", i+1))
		if err := os.MkdirAll(rdir, 0o750); err != nil {
			return err
		}
		p, err := e2eenv.Run(ctx, bin, rdir, yaml, l)
		if err != nil {
			return fmt.Errorf("gateway replica %d: %w", i+1, err)
		}
		h.members = append(h.members, &member{name: fmt.Sprintf("gw%d", i+1), group: groupGateway, proc: p,
			proxyURL: "http://soak:" + c.callerPW + "@" + l.Proxy})
	}
	return nil
}

func randomKey() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// certIDs returns the bank's two names of the client certificate now in
// dir/client.crt: the thumbprint its tokens carry (SHA-1, upper case) and
// the fingerprint its token arrivals are recorded under; "" when unreadable.
func certIDs(dir string) (thumbprint, fingerprint string) {
	b, err := os.ReadFile(filepath.Join(dir, "client.crt")) //nolint:gosec // G304: the directory the soak wrote the certificate to
	if err != nil {
		return "", ""
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", ""
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", ""
	}
	sum := sha1.Sum(blk.Bytes) //nolint:gosec // an identifier, as the bank computes it
	return strings.ToUpper(hex.EncodeToString(sum[:])), bankingcircle.Fingerprint(cert)
}

// tokenLife is one token the bank issued: when, until when (both truncated
// to the second by the claims) and to which certificate.
type tokenLife struct {
	iat, exp   time.Time
	thumbprint string
}

// tokenLives decodes the claims of the issued tokens.
func tokenLives(tokens []string) []tokenLife {
	var out []tokenLife
	for _, t := range tokens {
		var c struct {
			Iat, Exp   int64
			Thumbprint string
		}
		if jws.Claims(t, &c) != nil {
			continue
		}
		out = append(out, tokenLife{iat: time.Unix(c.Iat, 0), exp: time.Unix(c.Exp, 0), thumbprint: c.Thumbprint})
	}
	return out
}

// maxArrivalsPerMinute returns the most token requests that arrived at
// the bank from certificates of group within any rolling minute.
func maxArrivalsPerMinute(arrivals []bankingcircle.TokenArrival, group map[string]bool) int {
	return maxArrivalsIn(arrivals, group, time.Minute)
}

// maxArrivalsIn returns the most token requests from certificates of group
// within any rolling window of length w.
func maxArrivalsIn(arrivals []bankingcircle.TokenArrival, group map[string]bool, w time.Duration) int {
	var ts []time.Time
	for _, a := range arrivals {
		if group[a.Fingerprint] {
			ts = append(ts, a.Time)
		}
	}
	return bankingcircle.MaxTokenRequestsInWindow(ts, w)
}
