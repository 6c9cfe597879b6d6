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
	"github.com/tokenproxy/tokenproxy/internal/e2eenv"
)

// harness is the bank, tokenproxy and what the run recorded.
type harness struct {
	dir  string
	bank *e2eenv.Bank
	proc *e2eenv.Proc
	tl   *timeline
	// vault is nil when no Vault binary is at hand; vaultNote says why.
	vault     *vaultDev
	vaultNote string
	rotations int // good certificate versions written after the first
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
	// tokenproxy's own pacing stays under the bank's sliding-minute
	// threshold: rate r and burst b send at most r+b in any minute.
	rate := o.budget * 2 / 3
	co := e2eenv.ConfigOptions{RatePerMinute: rate, Burst: max(o.budget-rate-2, 1), Skew: "1s",
		Token: []string{"fetch_timeout: 2s", "max_wait: 5s"}, Route: []string{"timeouts: {upstream: 5s, dial: 2s}"}}
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
	cfg := h.bank.Config(l, co)
	if h.proc, err = e2eenv.Run(bctx, bin, h.dir, cfg, l); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

// restoreVault writes the bank's password to Vault KV.
func (h *harness) restoreVault() error {
	return h.vault.put(context.Background(), "soak/bank", map[string]string{"password": h.bank.Password})
}

func (h *harness) close() {
	if h.proc != nil {
		h.proc.Kill()
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
	samples          []sample
	maxPerMinute     int
	exitErr          error
	metricsText      string
	drainInFlight    int
}

// play runs the schedule, the rotation, the sampler and the load for
// o.duration, then drains with SIGTERM.
func (h *harness) play(ctx context.Context, o options) (*report, error) {
	rep := &report{start: time.Now()}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ld := &load{proxy: h.proc.L.Proxy, n: o.clients, pause: o.pause, stop: make(chan struct{}),
		target: "http://sandbox.bankingcircleconnect.com/api/v1/accounts?PageNumber=1&PageSize=1"}
	var wg sync.WaitGroup
	loadDone := make(chan struct{})
	go func() { ld.run(lctx); close(loadDone) }()
	// The fault schedule, the rotation and the Vault cycle stop before the
	// drain, so that the drain's conditions are the ones recorded.
	fctx, stopFaults := context.WithCancel(lctx)
	defer stopFaults()
	wg.Go(func() { h.schedule(fctx, o) })
	wg.Go(func() { h.rotate(fctx, o) })
	if h.vault != nil {
		wg.Go(func() { h.vault.cycle(fctx, 45*time.Second, 10*time.Second, h.restoreVault, h.tl) })
	}
	samplesDone := make(chan []sample, 1)
	go func() { samplesDone <- h.sampleLoop(lctx, o, ld) }()

	select {
	case <-time.After(o.duration):
	case <-ctx.Done():
	}
	// The drain: calm conditions, requests in flight, SIGTERM; clients stop
	// sending new requests at the signal.
	stopFaults()
	wg.Wait()
	h.bank.Emu.SetTokenFault(bankingcircle.Fault{})
	h.bank.Emu.SetAPIFault(bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: time.Second})
	h.tl.add(event{at: time.Now(), phase: phase{name: "drain (api slow 1s)", api: bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: time.Second}}})
	time.Sleep(500 * time.Millisecond) // requests enter the slow API
	if text, err := scrape(ctx, h.proc.L.Admin); err == nil {
		rep.metricsText = text
	}
	rep.sigtermAt = time.Now()
	close(ld.stop)
	if err := h.proc.Signal(sigterm); err != nil {
		return nil, fmt.Errorf("sending SIGTERM: %w", err)
	}
	rep.exitErr = h.proc.Wait(20 * time.Second)
	<-loadDone
	cancel()
	rep.samples = <-samplesDone
	ld.mu.Lock()
	rep.results = ld.results
	ld.mu.Unlock()
	rep.sent = ld.sent.Load()
	rep.maxPerMinute = h.bank.Emu.MaxTokenArrivalsPerMinute()
	for _, r := range rep.results {
		if r.start.Before(rep.sigtermAt) && r.end.After(rep.sigtermAt) {
			rep.drainInFlight++
		}
	}
	return rep, os.WriteFile(filepath.Join(h.dir, "tokenproxy.log"), h.proc.Logs(), 0o600)
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
	for n := 1; wait(o.rotate); n++ {
		if n == 2 {
			if err := h.bank.WriteBadClient(); err == nil {
				h.tl.add(event{at: time.Now(), note: "bad certificate version written"})
			}
			if !wait(o.rotate / 4) {
				return
			}
		}
		if err := h.bank.RotateClient(fmt.Sprintf("m2m client v%d", n+1)); err == nil {
			h.rotations++
			h.tl.add(event{at: time.Now(), note: fmt.Sprintf("certificate v%d", n+1)})
		}
	}
}

// sampleLoop reads the process's resources every o.sampleEvery.
func (h *harness) sampleLoop(ctx context.Context, o options, ld *load) []sample {
	var out []sample
	t := time.NewTicker(o.sampleEvery)
	defer t.Stop()
	for {
		s := sample{at: time.Now()}
		s.rss, s.fds = procStats(h.proc.Pid())
		if text, err := scrape(ctx, h.proc.L.Admin); err == nil {
			s.goroutines = metric(text, "go_goroutines")
			s.heap = metric(text, "go_memstats_heap_inuse_bytes")
		}
		s.tokenArrivalsMinute = h.bank.Emu.TokenArrivalsLastMinute()
		ld.mu.Lock()
		for _, r := range ld.results {
			if r.status == 200 && r.err == nil {
				s.served++
			}
		}
		s.failed = int64(len(ld.results)) - s.served
		ld.mu.Unlock()
		s.sent = ld.sent.Load()
		if s.rss > 0 {
			out = append(out, s)
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
	for _, s := range h.bank.Secrets() {
		if strings.Contains(text, s) {
			found = append(found, "a configured password or passcode")
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
