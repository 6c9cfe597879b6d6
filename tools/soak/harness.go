package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
)

// harness is the bank, tokenproxy and what the run recorded.
type harness struct {
	dir  string
	bank *e2eenv.Bank
	// members are the sidecar (first) and the gateway replicas.
	members []*member
	cluster *cluster // nil with -replicas 1
	// caps are the requests_per_minute of the sidecar and (when run) the
	// replicas' shared one.
	caps, bursts []int
	tl           *timeline
	// vault is nil when no Vault binary is at hand; vaultNote says why.
	vault     *vaultDev
	vaultNote string
	rotations int // good certificate versions written after the first
	// prints maps each client certificate's thumbprint and fingerprint to
	// its group, so that the bank's tokens and token arrivals can be
	// attributed.
	printsMu sync.Mutex
	prints   map[string]string
}

func setup(ctx context.Context, o options) (*harness, error) {
	h := &harness{dir: o.out, tl: &timeline{}}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	fmt.Println("soak: building tokenproxy")
	bin, err := e2eenv.Build(bctx, h.dir)
	if err != nil {
		return nil, err
	}
	if h.bank, err = e2eenv.StartBank(h.dir, func(c *bankingcircle.Config) {
		c.TokenTTL = o.tokenTTL
		c.TokenRequestsPerMinute = o.budget
	}); err != nil {
		return nil, err
	}
	l, err := e2eenv.NewListeners()
	if err != nil {
		h.close()
		return nil, err
	}
	// The sidecar's requests_per_minute (a hard cap in the bank's terms)
	// is 2/3 of its share of the bank's threshold, as in earlier runs.
	share, _ := budgets(o)
	rate := share * 2 / 3
	co := e2eenv.ConfigOptions{RatePerMinute: rate, Burst: max(share-rate-2, 1), Skew: "1s",
		Token: []string{"fetch_timeout: 2s", "max_wait: 5s"}, Route: []string{"timeouts: {upstream: 5s, dial: 2s}"}}
	h.caps, h.bursts = []int{rate}, []int{co.Burst}
	if o.vault {
		h.vault, h.vaultNote = startVault(h.dir)
	} else {
		h.vaultNote = "off (-vault=false)"
	}
	if h.vault != nil {
		if err := h.restoreVault(); err != nil {
			h.close()
			return nil, err
		}
		co.Top, co.Password = h.vault.configYAML(), "{vault: {path: soak/bank, field: password}}"
		h.vaultNote = "private dev server at " + h.vault.addr + ", token password read from KV, stopped and restarted"
	}
	proc, err := e2eenv.Run(bctx, bin, h.dir, h.bank.Config(l, co), l)
	if err != nil {
		h.close()
		return nil, err
	}
	h.notePrint(h.bank.Dir, groupSidecar)
	h.members = append(h.members, &member{name: groupSidecar, group: groupSidecar, proc: proc, proxyURL: "http://" + l.Proxy})
	if o.replicas > 1 {
		if err := h.startCluster(bctx, o, bin, co); err != nil {
			h.close()
			return nil, err
		}
	}
	return h, nil
}

// restoreVault writes the bank's password to Vault KV.
func (h *harness) restoreVault() error {
	return h.vault.put(context.Background(), "soak/bank", map[string]string{"password": h.bank.Password})
}

func (h *harness) close() {
	for _, m := range h.members {
		m.proc.Kill()
	}
	if h.cluster != nil && h.cluster.redis != nil {
		h.cluster.redis.stop()
	}
	if h.vault != nil {
		h.vault.stop()
	}
	if h.bank != nil {
		h.bank.Close()
	}
}

// report is what the run measured.
type report struct {
	start, sigtermAt time.Time
	results          []result
	sent             int64
	sentBy           []int64 // per member
	samples          []sample
	maxPerMinute     int
	exitErrs         []error  // per member
	metricsTexts     []string // per member, scraped before the drain
	drainInFlight    int
	// the most token requests from the sidecar's certificates, and from
	// the replicas', in any rolling minute at the bank
	maxSidecar, maxCluster int
	outages                []outage
}

// clientsOf assigns the app clients to members: o.clients to the sidecar,
// o.gwClients spread over the replicas.
func (h *harness) clientsOf(o options) []int {
	var out []int
	for range o.clients {
		out = append(out, 0)
	}
	if len(h.members) > 1 {
		for i := range o.gwClients {
			out = append(out, 1+i%(len(h.members)-1))
		}
	}
	return out
}

// play runs the schedule, the rotation, the sampler and the load for
// o.duration, then drains with SIGTERM.
func (h *harness) play(ctx context.Context, o options) (*report, error) {
	rep := &report{start: time.Now()}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ld := newLoad(h.members, h.clientsOf(o), o.pause,
		"http://sandbox.bankingcircleconnect.com/api/v1/accounts?PageNumber=1&PageSize=1")
	var wg sync.WaitGroup
	loadDone := make(chan struct{})
	go func() { ld.run(lctx); close(loadDone) }()
	// The fault schedule, the rotation and the Vault and Redis cycles stop
	// before the drain, so that the drain's conditions are the ones recorded.
	fctx, stopFaults := context.WithCancel(lctx)
	defer stopFaults()
	wg.Go(func() { h.schedule(fctx, o) })
	wg.Go(func() { h.rotate(fctx, o) })
	if h.vault != nil {
		wg.Go(func() { h.vault.cycle(fctx, 45*time.Second, 10*time.Second, h.restoreVault, h.tl) })
	}
	if h.cluster != nil {
		wg.Go(func() { h.cluster.redis.cycle(fctx, rep.start, redisStops(o.duration), o.redisDown, h.tl) })
	}
	samplesDone := make(chan []sample, 1)
	go func() { samplesDone <- h.sampleLoop(lctx, o, ld) }()

	select {
	case <-time.After(o.duration):
	case <-ctx.Done():
	}
	stopFaults()
	wg.Wait()
	h.drain(ctx, rep, ld)
	<-loadDone
	cancel()
	rep.samples = <-samplesDone
	ld.mu.Lock()
	rep.results = ld.results
	ld.mu.Unlock()
	rep.sent = ld.sentTotal()
	for i := range ld.sent {
		rep.sentBy = append(rep.sentBy, ld.sent[i].Load())
	}
	rep.maxPerMinute = h.bank.Emu.MaxTokenArrivalsPerMinute()
	if h.cluster != nil {
		rep.outages = h.cluster.redis.outages()
	}
	for _, r := range rep.results {
		if r.start.Before(rep.sigtermAt) && r.end.After(rep.sigtermAt) {
			rep.drainInFlight++
		}
	}
	for _, m := range h.members {
		name := "tokenproxy.log"
		if m.group == groupGateway {
			name = "tokenproxy-" + m.name + ".log"
		}
		if err := os.WriteFile(filepath.Join(h.dir, name), m.proc.Logs(), 0o600); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// redisStops returns when Redis is stopped: once in a run shorter than 4
// minutes, twice otherwise.
func redisStops(d time.Duration) []time.Duration {
	if d < 4*time.Minute {
		return []time.Duration{d * 2 / 5}
	}
	return []time.Duration{d * 2 / 5, d * 3 / 4}
}

// drain sets calm conditions with a slow API, scrapes every member's
// metrics, and sends SIGTERM to all of them with requests in flight;
// clients stop sending new requests at the signal.
func (h *harness) drain(ctx context.Context, rep *report, ld *load) {
	slow := bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: time.Second}
	h.bank.Emu.SetTokenFault(bankingcircle.Fault{})
	h.bank.Emu.SetAPIFault(slow)
	h.tl.add(event{at: time.Now(), phase: phase{name: "drain (api slow 1s)", api: slow}})
	time.Sleep(500 * time.Millisecond) // requests enter the slow API
	rep.metricsTexts = make([]string, len(h.members))
	for i, m := range h.members {
		if text, err := scrape(ctx, m.proc.L.Admin); err == nil {
			rep.metricsTexts[i] = text
		}
	}
	rep.sigtermAt = time.Now()
	close(ld.stop)
	rep.exitErrs = make([]error, len(h.members))
	for i, m := range h.members {
		if err := m.proc.Signal(sigterm); err != nil {
			rep.exitErrs[i] = fmt.Errorf("sending SIGTERM: %w", err)
		}
	}
	for i, m := range h.members {
		if rep.exitErrs[i] == nil {
			rep.exitErrs[i] = m.proc.Wait(20 * time.Second)
		}
	}
}

// schedule applies one phase after another until ctx ends.
func (h *harness) schedule(ctx context.Context, o options) {
	ps := selectPhases(phases(), o.only)
	for i := 0; ; i++ {
		p := ps[i%len(ps)]
		h.bank.Emu.SetTokenFault(p.token)
		h.bank.Emu.SetAPIFault(p.api)
		h.tl.add(event{at: time.Now(), phase: p})
		select {
		case <-ctx.Done():
			return
		case <-time.After(o.phase):
		}
	}
}

// rotate replaces the client certificate file every o.rotate; the second
// rotation first writes a version that does not decrypt, which tokenproxy
// must ignore (the old certificate keeps serving), then a good one.
func (h *harness) rotate(ctx context.Context, o options) {
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	banks, groups := []*e2eenv.Bank{h.bank}, []string{groupSidecar, groupGateway}
	if h.cluster != nil {
		banks = append(banks, h.cluster.bank)
	}
	for n := 1; wait(o.rotate); n++ {
		if n == 2 {
			for i, b := range banks {
				if err := b.WriteBadClient(); err == nil {
					h.tl.add(event{at: time.Now(), note: "bad certificate version written (" + groups[i] + ")"})
				}
			}
			if !wait(o.rotate / 4) {
				return
			}
		}
		for i, b := range banks {
			if err := b.RotateClient(fmt.Sprintf("m2m client v%d", n+1)); err == nil {
				h.notePrint(b.Dir, groups[i])
				if i == 0 {
					h.rotations++
				}
				h.tl.add(event{at: time.Now(), note: fmt.Sprintf("certificate v%d (%s)", n+1, groups[i])})
			}
		}
	}
}

// notePrint records the thumbprint of the certificate now in dir as group's.
func (h *harness) notePrint(dir, group string) {
	h.printsMu.Lock()
	defer h.printsMu.Unlock()
	if h.prints == nil {
		h.prints = map[string]string{}
	}
	tp, fp := certIDs(dir)
	h.prints[tp], h.prints[fp] = group, group
}

// printsOf returns the thumbprints and fingerprints of group's certificates.
func (h *harness) printsOf(group string) map[string]bool {
	h.printsMu.Lock()
	defer h.printsMu.Unlock()
	out := map[string]bool{}
	for p, g := range h.prints {
		if g == group {
			out[p] = true
		}
	}
	return out
}

// sampleLoop reads every member's resources every o.sampleEvery.
func (h *harness) sampleLoop(ctx context.Context, o options, ld *load) []sample {
	var out []sample
	t := time.NewTicker(o.sampleEvery)
	defer t.Stop()
	for {
		now := time.Now()
		arrivals := h.bank.Emu.TokenArrivalsLastMinute()
		served := make([]int64, len(h.members))
		answered := make([]int64, len(h.members))
		ld.mu.Lock()
		for _, r := range ld.results {
			answered[r.proc]++
			if r.status == 200 && r.err == nil {
				served[r.proc]++
			}
		}
		ld.mu.Unlock()
		for i, m := range h.members {
			s := sample{at: now, process: m.name, tokenArrivalsMinute: arrivals,
				served: served[i], failed: answered[i] - served[i], sent: ld.sent[i].Load()}
			s.rss, s.fds = procStats(m.proc.Pid())
			if text, err := scrape(ctx, m.proc.L.Admin); err == nil {
				s.goroutines = metric(text, "go_goroutines")
				s.heap = metric(text, "go_memstats_heap_inuse_bytes")
			}
			if s.rss > 0 {
				out = append(out, s)
			}
		}
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
	}
}

// secretsIn returns which kinds of secret appear in text.
func (h *harness) secretsIn(text string) []string {
	var found []string
	secrets := h.bank.Secrets()
	if h.cluster != nil {
		secrets = append(secrets, h.cluster.key, h.cluster.callerPW)
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			found = append(found, "a configured password, passcode or key")
		}
	}
	for _, tok := range h.bank.Emu.IssuedTokens() {
		if strings.Contains(text, tok) {
			found = append(found, "an issued access token")
			break
		}
	}
	return found
}
