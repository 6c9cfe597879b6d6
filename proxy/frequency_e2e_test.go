package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/testkit/redistest"
)

// frequencyRoute is the route-level block of a daily budget of 4 unattended calls.
const frequencyRoute = "    frequency_per_day: {limit: 4, time_zone: Europe/Berlin}"

// accountCalls counts the account calls the bank received for psu, with
// (attended) and without (unattended) PSU-IP-Address.
func (b *bank) accountCalls(psu string) (unattended, attended int) {
	for _, r := range b.emu.Received() {
		if !strings.HasPrefix(r.Path, "/stet/psd2/v1/accounts") || !r.Accepted {
			continue
		}
		if who, ok := b.emu.CustomerOf(r.Header.Get("Authorization")); !ok || who != psu {
			continue
		}
		if r.Header.Get("Psu-Ip-Address") != "" {
			attended++
		} else {
			unattended++
		}
	}
	return unattended, attended
}

// curlAccount calls the accounts endpoint with curl through x for subject;
// psuIP, when set, marks the call attended. It returns the status, the
// Retry-After header and the body.
func curlAccount(t *testing.T, x *tp, subject, psuIP string) (int, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	hdr, body := filepath.Join(dir, "h"), filepath.Join(dir, "b")
	args := []string{"-sS", "--max-time", "20", "--proxy", x.proxyURL.String(), "-D", hdr, "-o", body, "-w", "%{http_code}",
		"-H", "Tokenproxy-Subject: " + subject}
	if psuIP != "" {
		args = append(args, "-H", "PSU-IP-Address: "+psuIP)
	}
	out, err := exec.Command("curl", append(args, bpceAccountsURL)...).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	code, _ := strconv.Atoi(string(out))
	h, _ := os.ReadFile(hdr)
	b, _ := os.ReadFile(body)
	retry := ""
	for line := range strings.SplitSeq(string(h), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Retry-After") {
			retry = strings.TrimSpace(v)
		}
	}
	return code, retry, b
}

// refusal is the JSON body of a 429 access_frequency_exceeded.
type refusal struct {
	Error, Message, Route, Reset string
}

// checkRefusal checks a refused call: 429, the code, the reset (the next
// midnight in Berlin, RFC 3339) and a Retry-After up to it.
func checkRefusal(t *testing.T, code int, retry string, body []byte) {
	t.Helper()
	var r refusal
	if code != http.StatusTooManyRequests || json.Unmarshal(body, &r) != nil || r.Error != "access_frequency_exceeded" || r.Route != "bpce" {
		t.Fatalf("refused call: %d %s", code, body)
	}
	reset, err := time.Parse(time.RFC3339, r.Reset)
	if err != nil {
		t.Fatalf("reset %q: %v", r.Reset, err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	now := time.Now().In(berlin)
	want := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, berlin)
	if !reset.Equal(want) || !strings.Contains(r.Message, r.Reset) {
		t.Fatalf("reset %s, want %s (the next midnight in Berlin); message %q", reset, want, r.Message)
	}
	secs, err := strconv.Atoi(retry)
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > time.Until(reset)+2*time.Second {
		t.Fatalf("Retry-After %q, want the seconds until %s", retry, reset)
	}
}

// TestAccessFrequencyBolt: one tokenproxy counting in its bbolt consent
// store. Four unattended calls (curl) reach the bank, the fifth gets 429
// with the reset time and the bank never sees it; an attended call passes;
// after a restart the count is still spent.
func TestAccessFrequencyBolt(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl")
	}
	b := newBank(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	yaml := b.oauthYAML(addr, "", frequencyRoute, boltStore(t, dir, newKey(t)))
	x := startTP(t, b, yaml, nil)
	a := x.app(t, "")
	a.consent(b, "alice", "marc")

	for i := range 4 {
		if code, _, body := curlAccount(t, x, "alice", ""); code != http.StatusOK {
			t.Fatalf("unattended call %d: %d %s", i+1, code, body)
		}
	}
	code, retry, body := curlAccount(t, x, "alice", "")
	checkRefusal(t, code, retry, body)
	if code, _, body := curlAccount(t, x, "alice", "203.0.113.9"); code != http.StatusOK {
		t.Fatalf("attended call: %d %s", code, body)
	}
	if un, at := b.accountCalls("marc"); un != 4 || at != 1 {
		t.Fatalf("the bank received %d unattended and %d attended calls; want 4 and 1", un, at)
	}
	reg := x.metrics.Registry()
	if got := counterValue(t, reg, "tokenproxy_access_counted_total", "route", "bpce"); got != 4 {
		t.Fatalf("tokenproxy_access_counted_total = %v, want 4", got)
	}
	if got := counterValue(t, reg, "tokenproxy_access_refused_total", "route", "bpce", "reason", "exceeded"); got != 1 {
		t.Fatalf("tokenproxy_access_refused_total{reason=exceeded} = %v, want 1", got)
	}

	// A restart keeps the count: the bbolt file holds it.
	x.stop()
	x2 := startTP(t, b, yaml, nil)
	code, retry, body = curlAccount(t, x2, "alice", "")
	checkRefusal(t, code, retry, body)
	if code, _, body := curlAccount(t, x2, "alice", "203.0.113.9"); code != http.StatusOK {
		t.Fatalf("attended call after the restart: %d %s", code, body)
	}
	if un, at := b.accountCalls("marc"); un != 4 || at != 2 {
		t.Fatalf("after the restart the bank received %d unattended and %d attended calls; want 4 and 2", un, at)
	}
}

// TestAccessFrequencyAcrossThreeReplicas: three replicas sharing a
// PostgreSQL consent store, counting in Redis or in PostgreSQL. 20
// concurrent unattended calls of one consent, spread over the replicas:
// exactly 4 reach the bank, 16 get 429. With Redis gone, an unattended
// call is refused with 503 and the bank does not see it.
func TestAccessFrequencyAcrossThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server and PostgreSQL")
	}
	for _, counter := range []string{"redis", "postgres"} {
		t.Run(counter, func(t *testing.T) {
			pg := pgtest.Start(t)
			db := pg.NewDatabase(t)
			dir := t.TempDir()
			passFile, keyFile := filepath.Join(dir, "pgpass"), filepath.Join(dir, "consent.key")
			if err := os.WriteFile(passFile, []byte(pg.Password()), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)), 0o600); err != nil {
				t.Fatal(err)
			}
			storeYAML := fmt.Sprintf("    postgres: {host: %s, port: %d, database: %s, user: %s, password: {file: %s}, tls: {mode: disable}, migrate_on_start: true, key: {file: %s}}",
				pg.Host(), pg.Port(), db, pgtest.User, passFile, keyFile)
			top := ""
			var rs *redistest.Server
			if counter == "redis" {
				rs = redistest.Start(t)
				if err := os.WriteFile(filepath.Join(dir, "redis.key"), []byte(strings.Repeat("cd", 32)), 0o600); err != nil {
					t.Fatal(err)
				}
				top = fmt.Sprintf("store:\n  kind: redis\n  redis: {addresses: [%s], encryption_key: {file: %s}, max_replicas: 3, poll_interval: 50ms, read_timeout: 300ms, dial_timeout: 300ms}\n",
					rs.Addr(), filepath.Join(dir, "redis.key"))
			}
			b := newBank(t)
			var replicas []*tp
			for range 3 {
				replicas = append(replicas, startTP(t, b, b.oauthYAML(freeAddr(t), top, frequencyRoute, storeYAML), nil))
			}
			replicas[0].app(t, "").consent(b, "alice", "marc")
			replicas[0].app(t, "").consent(b, "carol", "carla")

			var mu sync.Mutex
			statuses := map[int]int{}
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					a := replicas[i%3].app(t, "")
					ans := a.account("alice")
					mu.Lock()
					statuses[ans.status]++
					mu.Unlock()
					if ans.status == http.StatusTooManyRequests && !bytes.Contains(ans.body, []byte(`"error":"access_frequency_exceeded"`)) {
						t.Errorf("429 without the code: %s", ans.body)
					}
				})
			}
			wg.Wait()
			if statuses[http.StatusOK] != 4 || statuses[http.StatusTooManyRequests] != 16 {
				t.Fatalf("statuses %v; want 4 × 200 and 16 × 429", statuses)
			}
			if un, _ := b.accountCalls("marc"); un != 4 {
				t.Fatalf("the bank received %d unattended calls; want 4", un)
			}
			if code, _, body := curlAccount(t, replicas[2], "alice", "203.0.113.9"); code != http.StatusOK {
				t.Fatalf("attended call: %d %s", code, body)
			}
			if rs == nil {
				return
			}
			// Fail closed: without Redis no unattended call is sent.
			if code, _, body := curlAccount(t, replicas[0], "carol", "203.0.113.9"); code != http.StatusOK { // the token, cached
				t.Fatalf("carol attended: %d %s", code, body)
			}
			rs.Stop()
			code, retry, body := curlAccount(t, replicas[0], "carol", "")
			if code != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"error":"access_count_unavailable"`)) || retry == "" {
				t.Fatalf("with Redis down: %d (Retry-After %q) %s; want 503 access_count_unavailable", code, retry, body)
			}
			if un, _ := b.accountCalls("carla"); un != 0 {
				t.Fatalf("with Redis down the bank received %d unattended calls; want none", un)
			}
			if got := counterValue(t, replicas[0].metrics.Registry(), "tokenproxy_access_refused_total", "route", "bpce", "reason", "unavailable"); got != 1 {
				t.Fatalf("tokenproxy_access_refused_total{reason=unavailable} = %v, want 1", got)
			}
		})
	}
}

// counterValue is the value of the counter name with the labels (name,
// value pairs) in reg; 0 when it was never counted.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
