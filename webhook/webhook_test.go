package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/webhook"
)

const testSecret = "whsec_4ZpP0sTz"

func ring(t testing.TB) *consentstore.Keyring {
	t.Helper()
	r, err := consentstore.SingleKey(bytes.Repeat([]byte{7}, consentstore.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// stores opens n handles on one store: n pools on one PostgreSQL database
// (n replicas), or one bbolt store shared by n dispatchers (one process).
func stores(t *testing.T, kind string, n int) []consentstore.Store {
	t.Helper()
	var out []consentstore.Store
	switch kind {
	case "bolt":
		s, err := consentstore.OpenBolt(t.TempDir()+"/consents.db", ring(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		for range n {
			out = append(out, s)
		}
	case "postgres":
		cfg := pgConfig(t, pgtest.Start(t))
		for i := range n {
			s, err := consentstore.OpenPostgres(context.Background(), cfg, ring(t), i == 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			out = append(out, s)
		}
	}
	return out
}

func pgConfig(t *testing.T, srv *pgtest.Server) consentstore.PostgresConfig {
	return consentstore.PostgresConfig{Host: srv.Host(), Port: srv.Port(), Database: srv.NewDatabase(t),
		User: pgtest.User, Password: srv.Password(), TLSMode: "disable", MaxConns: 4}
}

// produce appends n consent.active events with fresh ids and returns them.
func produce(t testing.TB, ob consentstore.Outbox, from, n int) []string {
	t.Helper()
	var ids []string
	for i := from; i < from+n; i++ {
		c := &consentstore.Consent{Route: "bpce", Owner: "app", Subject: "c" + strconv.Itoa(i), Created: time.Now(), RefreshExpiry: time.Now().Add(90 * 24 * time.Hour)}
		e := consentstore.NewEvent(consentstore.EventActive, c, 1, "", time.Now())
		if _, err := ob.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// receiver is the app's endpoint: while down it answers 503; up, it
// verifies the signature, answers 204 and keeps the event ids (the
// receiver's dedupe), counting each 2xx per id.
type receiver struct {
	t      testing.TB
	down   atomic.Bool
	failed atomic.Int64
	// hold, when set, makes requests it matches wait for the client to go.
	hold func(*http.Request) bool
	held chan string

	mu   sync.Mutex
	seen map[string]int
}

func newReceiver(t testing.TB) *receiver {
	return &receiver{t: t, seen: map[string]int{}, held: make(chan string, 100)}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get(webhook.HeaderEventID)
	if r.hold != nil && r.hold(req) {
		r.held <- id
		<-req.Context().Done() // until the client is killed
		return
	}
	if r.down.Load() {
		r.failed.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := webhook.Verify([]byte(testSecret), req.Header.Get(webhook.HeaderSignature), body, time.Now(), time.Minute); err != nil {
		r.t.Errorf("event %s: %v", id, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.seen[id]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// has reports whether every id was received.
func (r *receiver) has(ids []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.seen[id] == 0 {
			return false
		}
	}
	return true
}

func (r *receiver) extra(ids []string) (dups int, unknown int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
		dups += max(r.seen[id]-1, 0)
	}
	for id := range r.seen {
		if !want[id] {
			unknown++
		}
	}
	return dups, unknown
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) Delivery(_, result string)  { c.mu.Lock(); c.n[result]++; c.mu.Unlock() }
func (c *counts) Backlog(int, time.Duration) {}
func (c *counts) get(r string) int           { c.mu.Lock(); defer c.mu.Unlock(); return c.n[r] }

func hook(u string) webhook.Hook {
	return webhook.Hook{URL: u, Secret: secret.Static(secret.New(testSecret), "test"),
		Events: map[consentstore.EventType]bool{consentstore.EventActive: true}}
}

// run starts a dispatcher over s until the test ends (or stop is called).
func run(t *testing.T, s consentstore.Store, u string, obs webhook.Observer, lease time.Duration) (stop func()) {
	t.Helper()
	d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(s), Hooks: []webhook.Hook{hook(u)},
		Poll: 10 * time.Millisecond, Backoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Timeout: 2 * time.Second, Lease: lease, Batch: 4, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// TestDeliveryThroughOutage: the receiver is down — answering 503, or
// refusing connections — while events are produced, then comes back: it
// gets every event (by id), through two dispatchers on one store.
func TestDeliveryThroughOutage(t *testing.T) {
	for _, kind := range []string{"bolt", "postgres"} {
		for _, outage := range []string{"503", "refused"} {
			t.Run(kind+"/"+outage, func(t *testing.T) {
				ss := stores(t, kind, 2)
				rcv := newReceiver(t)
				var srv *httptest.Server
				var u string
				if outage == "503" {
					rcv.down.Store(true)
					srv = httptest.NewServer(rcv)
					t.Cleanup(srv.Close)
					u = srv.URL
				} else {
					l, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						t.Fatal(err)
					}
					u = "http://" + l.Addr().String()
					_ = l.Close() // nothing listens: connections are refused
				}
				obs := &counts{n: map[string]int{}}
				for _, s := range ss {
					run(t, s, u, obs, 0)
				}
				ob := consentstore.OutboxOf(ss[0])
				ids := produce(t, ob, 0, 12)
				eventually(t, 20*time.Second, "two failed rounds per event", func() bool { return obs.get(webhook.ResultFailed) >= 24 })
				ids = append(ids, produce(t, ob, 12, 8)...)
				if outage == "503" {
					rcv.down.Store(false)
				} else {
					l, err := net.Listen("tcp", u[len("http://"):])
					if err != nil {
						t.Fatal(err)
					}
					srv = httptest.NewUnstartedServer(rcv)
					srv.Listener = l
					srv.Start()
					t.Cleanup(srv.Close)
				}
				eventually(t, 20*time.Second, "every event delivered", func() bool { return rcv.has(ids) })
				dups, unknown := rcv.extra(ids)
				if unknown != 0 {
					t.Fatalf("%d events received that were never produced", unknown)
				}
				eventually(t, 5*time.Second, "an empty backlog", func() bool {
					n, _, err := ob.Backlog(context.Background())
					return err == nil && n == 0
				})
				t.Logf("%d events, %d failed deliveries during the outage, %d duplicates on the wire", len(ids), obs.get(webhook.ResultFailed), dups)
			})
		}
	}
}

// TestGiveUpAfterMaxAge: an event undelivered past max_age is given up,
// counted, and leaves the backlog.
func TestGiveUpAfterMaxAge(t *testing.T) {
	s := stores(t, "bolt", 1)[0]
	rcv := newReceiver(t)
	rcv.down.Store(true)
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	ob := consentstore.OutboxOf(s)
	produce(t, ob, 0, 3)
	obs := &counts{n: map[string]int{}}
	d, err := webhook.New(webhook.Config{Outbox: ob, Hooks: []webhook.Hook{hook(srv.URL)}, MaxAge: 150 * time.Millisecond,
		Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "three events given up", func() bool {
		_, _ = d.Step(context.Background())
		return obs.get(webhook.ResultGaveUp) == 3
	})
	if n, _, _ := ob.Backlog(context.Background()); n != 0 {
		t.Fatalf("backlog %d after giving up", n)
	}
}

// TestKilledReplicaLeaseExpires: three replicas on one PostgreSQL store —
// this test process runs two dispatchers, a child process the third.
// The receiver keeps the child's deliveries hanging; the child is killed
// with SIGKILL mid-delivery, events keep being produced, and the others
// deliver everything, the killed replica's claimed events once its lease
// has expired.
func TestKilledReplicaLeaseExpires(t *testing.T) {
	srv := pgtest.Start(t)
	cfg := pgConfig(t, srv)
	ss := []consentstore.Store{}
	for i := range 2 {
		s, err := consentstore.OpenPostgres(context.Background(), cfg, ring(t), i == 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		ss = append(ss, s)
	}
	rcv := newReceiver(t)
	// The child's webhook URL carries ?replica=child (the same endpoint):
	// its deliveries are the ones held.
	rcv.hold = func(r *http.Request) bool { return r.URL.Query().Get("replica") == "child" }
	hs := httptest.NewServer(rcv)
	t.Cleanup(hs.Close)

	// The child's lease: webhook.New raises it to one timeout (3 s) per
	// webhook plus 5 s.
	const lease = 8 * time.Second
	child := exec.Command(os.Args[0], "-test.run=^TestChildDispatcher$", "-test.v") //nolint:gosec // G702: this test binary, re-run as the child replica
	child.Env = append(os.Environ(), "WEBHOOK_CHILD_URL="+hs.URL+"/?replica=child",
		"WEBHOOK_CHILD_PG="+fmt.Sprintf("%s|%d|%s|%s", cfg.Host, cfg.Port, cfg.Database, cfg.Password),
		"WEBHOOK_CHILD_LEASE="+lease.String())
	var out bytes.Buffer
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	})
	for _, s := range ss {
		run(t, s, hs.URL, nil, lease)
	}
	ob := consentstore.OutboxOf(ss[0])
	var ids []string
	var held []string
	for len(held) == 0 {
		ids = append(ids, produce(t, ob, len(ids), 1)...)
		select {
		case id := <-rcv.held:
			held = append(held, id)
		case <-time.After(20 * time.Millisecond):
		}
		if len(ids) > 2000 {
			t.Fatalf("the child replica claimed nothing; its output:\n%s", out.String())
		}
	}
	// SIGKILL mid-delivery: no settle, no lease release.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	killed = true
	at := time.Now()
	for len(rcv.held) > 0 {
		held = append(held, <-rcv.held)
	}
	ids = append(ids, produce(t, ob, len(ids), 10)...) // produced while that replica is gone
	eventually(t, 30*time.Second, "every event delivered by the surviving replicas", func() bool { return rcv.has(ids) })
	took := time.Since(at)
	if dups, unknown := rcv.extra(ids); unknown != 0 {
		t.Fatalf("%d unknown events (duplicates %d)", unknown, dups)
	}
	t.Logf("%d events; the killed replica held %d mid-delivery; all delivered %s after the kill (lease %s)", len(ids), len(held), took.Round(time.Millisecond), lease)
}

// TestChildDispatcher is the child replica of TestKilledReplicaLeaseExpires;
// it runs only as that child.
func TestChildDispatcher(t *testing.T) {
	u := os.Getenv("WEBHOOK_CHILD_URL")
	if u == "" {
		t.Skip("the child replica of TestKilledReplicaLeaseExpires")
	}
	var cfg consentstore.PostgresConfig
	var pw string
	var parts [4]string
	p := os.Getenv("WEBHOOK_CHILD_PG")
	for i := range 3 {
		j := bytes.IndexByte([]byte(p), '|')
		parts[i], p = p[:j], p[j+1:]
	}
	parts[3] = p
	port, _ := strconv.Atoi(parts[1])
	pw = parts[3]
	cfg = consentstore.PostgresConfig{Host: parts[0], Port: port, Database: parts[2], User: pgtest.User, Password: pw, TLSMode: "disable", MaxConns: 2}
	s, err := consentstore.OpenPostgres(context.Background(), cfg, ring(t), false)
	if err != nil {
		t.Fatal(err)
	}
	lease, _ := time.ParseDuration(os.Getenv("WEBHOOK_CHILD_LEASE"))
	d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(s), Hooks: []webhook.Hook{hook(u)},
		Poll: 10 * time.Millisecond, Timeout: 3 * time.Second, Lease: lease, Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	d.Run(context.Background()) // until killed
}
