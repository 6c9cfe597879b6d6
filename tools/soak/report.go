package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// write prints the report, saves it with the samples under o.out and says
// whether the run failed.
func (rep *report) write(stdout io.Writer, o options, h *harness) (failed bool, err error) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	names, groups := make([]string, len(h.members)), make([]string, len(h.members))
	for i, m := range h.members {
		names[i], groups[i] = m.name, m.group
	}
	lives := tokenLives(h.bank.Emu.IssuedTokens())
	j := &judge{tl: h.tl, sigterm: rep.sigtermAt, groups: groups, outages: rep.outages}
	gwPrints := h.printsOf(groupGateway)
	for _, l := range lives {
		if gwPrints[l.thumbprint] {
			j.clusterTokens = append(j.clusterTokens, l)
		}
	}
	t := count(rep.results, j, names)
	p("tokenproxy soak: %s of load and faults; sidecar with %d clients, %d gateway replicas with %d clients; token TTL %s, phase %s, certificate rotation every %s",
		o.duration, o.clients, len(h.members)-1, o.gwClients*min(1, len(h.members)-1), o.tokenTTL, o.phase, o.rotate)
	p("vault: %s", h.vaultNote)
	p("redis: %s", redisNote(h, rep))
	p("")
	p("| figure | value |")
	p("|---|---|")
	p("| requests sent | %d |", rep.sent)
	p("| served (200) | %d |", t.byClass[classServed])
	p("| failed, could not be served | %d |", t.byClass[classCouldNot])
	p("| failed, DEFECT (could have been served) | %d |", t.byClass[classDefect])
	p("| refused while draining (after SIGTERM) | %d |", t.byClass[classDrain])
	p("| requests in flight at SIGTERM | %d |", rep.drainInFlight)
	sidecarShare, _ := budgets(o)
	p("| token requests at the bank (all processes), max in a rolling minute | %d (budget %d) |", rep.maxPerMinute, o.budget)
	arrivals := h.bank.Emu.TokenArrivalsByClient()
	rep.maxSidecar = maxArrivalsPerMinute(arrivals, h.printsOf(groupSidecar))
	p("| ... from the sidecar | %d (its share %d, its requests_per_minute %d) |", rep.maxSidecar, sidecarShare, h.caps[0])
	if len(h.members) > 1 {
		rep.maxCluster = maxArrivalsPerMinute(arrivals, gwPrints)
		p("| ... from the gateway replicas together | %d (their share and requests_per_minute %d) |", rep.maxCluster, h.caps[1])
	}
	for i, g := range []string{groupSidecar, groupGateway}[:len(h.caps)] {
		p("| token requests from the %s within any 1 s (burst %d) | %d |", g, h.bursts[i], maxArrivalsIn(arrivals, h.printsOf(g), time.Second))
	}
	p("| client certificates the bank saw (distinct serials; rotations %d per group) | %d |", h.rotations, len(h.bank.Emu.Stats().HandshakesBySerial))
	p("")
	p("| process | sent | served | could not | DEFECT | drain | exit after SIGTERM |")
	p("|---|---|---|---|---|---|---|")
	for i, m := range h.members {
		c := t.byProc[i]
		p("| %s | %d | %d | %d | %d | %d | %s |", m.name, rep.sentBy[i], c[classServed], c[classCouldNot], c[classDefect], c[classDrain], exitText(rep.exitErrs[i]))
	}
	trends := rep.trends(h)
	p("")
	p("| process | resource | start | middle | end | after warm-up (median) | last quarter (median) | leak |")
	p("|---|---|---|---|---|---|---|---|")
	for _, tr := range trends {
		p("| %s | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %v |", tr.process, tr.name, tr.start, tr.mid, tr.end, tr.warm, tr.late, tr.leak)
	}
	secrets, logBytes, notJSON := 0, 0, 0
	var secretKinds []string
	for i, m := range h.members {
		logs := string(m.proc.Logs())
		logBytes += len(logs)
		notJSON += linesNotJSON(logs)
		found := append(h.secretsIn(logs), h.secretsIn(rep.metricsTexts[i])...)
		secrets += len(found)
		for _, f := range found {
			secretKinds = append(secretKinds, m.name+": "+f)
		}
	}
	p("")
	p("secrets found in the logs (%d processes, %d bytes) and the metrics: %d", len(h.members), logBytes, secrets)
	p("log lines that are not JSON (log.format: json): %d", notJSON)
	p("")
	p("failures by class and reason:")
	for _, r := range t.reasons() {
		p("%s", r)
	}
	if len(t.defects) > 0 {
		p("")
		p("first defects:")
		for _, d := range t.defects {
			p("  %s", d)
		}
	}
	verdict := rep.verdict(o, h.caps, t, trends, secretKinds, names)
	p("")
	if len(verdict) == 0 {
		p("PASS")
	} else {
		p("FAIL: %s", strings.Join(verdict, "; "))
	}
	p("samples: %s", filepath.Join(o.out, "samples.csv"))
	if _, err := io.WriteString(stdout, b.String()); err != nil {
		return false, err
	}
	return len(verdict) > 0, rep.save(o, h, b.String())
}

// verdict lists what makes the run fail.
func (rep *report) verdict(o options, caps []int, t tally, trends []trend, secrets, names []string) []string {
	var v []string
	if t.byClass[classDefect] > 0 {
		v = append(v, fmt.Sprintf("%d defect-class failures", t.byClass[classDefect]))
	}
	if rep.maxPerMinute > o.budget {
		v = append(v, fmt.Sprintf("token budget overrun at the bank: %d > %d per minute", rep.maxPerMinute, o.budget))
	}
	if rep.maxSidecar > caps[0] {
		v = append(v, fmt.Sprintf("the sidecar exceeded its requests_per_minute: %d > %d", rep.maxSidecar, caps[0]))
	}
	if len(caps) > 1 && rep.maxCluster > caps[1] {
		v = append(v, fmt.Sprintf("the gateway replicas together exceeded their shared requests_per_minute: %d > %d", rep.maxCluster, caps[1]))
	}
	for _, tr := range trends {
		if tr.leak {
			v = append(v, "leak trend in "+tr.process+" "+tr.name)
		}
	}
	if len(secrets) > 0 {
		v = append(v, "secrets found: "+strings.Join(secrets, ", "))
	}
	for i, err := range rep.exitErrs {
		if err != nil {
			v = append(v, names[i]+" did not exit cleanly after SIGTERM: "+err.Error())
		}
	}
	return v
}

// trends returns the leak trends of every member's resources.
func (rep *report) trends(h *harness) []trend {
	var out []trend
	for _, m := range h.members {
		var ss []sample
		for _, s := range rep.samples {
			if s.process == m.name {
				ss = append(ss, s)
			}
		}
		for _, tr := range []trend{
			leakTrend("goroutines", ss, func(s sample) float64 { return s.goroutines }, 1.5, 50),
			leakTrend("heap in use (bytes)", ss, func(s sample) float64 { return s.heap }, 2, 8<<20),
			leakTrend("RSS (bytes)", ss, func(s sample) float64 { return s.rss }, 2, 16<<20),
			leakTrend("open fds", ss, func(s sample) float64 { return s.fds }, 1.5, 20),
		} {
			tr.process = m.name
			out = append(out, tr)
		}
	}
	return out
}

// save writes samples.csv, events.csv and report.txt under o.out.
func (rep *report) save(o options, h *harness, text string) error {
	if err := writeCSV(filepath.Join(o.out, "samples.csv"), rep.start, rep.samples); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "events.csv"), []byte(h.tl.csv(rep.start)), 0o644); err != nil { //nolint:gosec // a report
		return err
	}
	var b strings.Builder
	b.WriteString("seconds,group\n")
	side, gw := h.printsOf(groupSidecar), h.printsOf(groupGateway)
	for _, a := range h.bank.Emu.TokenArrivalsByClient() {
		g := "unknown"
		switch {
		case side[a.Fingerprint]:
			g = groupSidecar
		case gw[a.Fingerprint]:
			g = groupGateway
		}
		fmt.Fprintf(&b, "%.3f,%s\n", a.Time.Sub(rep.start).Seconds(), g)
	}
	if err := os.WriteFile(filepath.Join(o.out, "token-arrivals.csv"), []byte(b.String()), 0o644); err != nil { //nolint:gosec // a report
		return err
	}
	return os.WriteFile(filepath.Join(o.out, "report.txt"), []byte(text), 0o644) //nolint:gosec // a report
}

func redisNote(h *harness, rep *report) string {
	if h.cluster == nil {
		return "none (-replicas 1)"
	}
	var parts []string
	for _, o := range rep.outages {
		parts = append(parts, fmt.Sprintf("down %.0f s–%.0f s", o.from.Sub(rep.start).Seconds(), o.to.Sub(rep.start).Seconds()))
	}
	return fmt.Sprintf("private redis-server at %s shared by the replicas; killed and restarted without its data: %s",
		h.cluster.redis.addr, strings.Join(parts, ", "))
}

// linesNotJSON counts the non-empty log lines that are not JSON objects.
func linesNotJSON(logs string) int {
	n := 0
	for line := range strings.SplitSeq(logs, "\n") {
		if line != "" && !strings.HasPrefix(line, "{") {
			n++
		}
	}
	return n
}

func exitText(err error) string {
	if err == nil {
		return "0, within the grace period"
	}
	return err.Error()
}
