package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// write prints the report, saves it with the samples under o.out and says
// whether the run failed.
func (rep *report) write(stdout io.Writer, o options, h *harness) (failed bool, err error) {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	t := count(rep.results, h.tl, rep.sigtermAt)
	p("tokenproxy soak: %s of load and faults, %d clients, token TTL %s, phase %s, certificate rotation every %s",
		o.duration, o.clients, o.tokenTTL, o.phase, o.rotate)
	p("vault: %s", h.vaultNote)
	p("")
	p("| figure | value |")
	p("|---|---|")
	p("| requests sent | %d |", rep.sent)
	p("| served (200) | %d |", t.byClass[classServed])
	p("| failed, could not be served | %d |", t.byClass[classCouldNot])
	p("| failed, DEFECT (could have been served) | %d |", t.byClass[classDefect])
	p("| refused while draining (after SIGTERM) | %d |", t.byClass[classDrain])
	p("| requests in flight at SIGTERM | %d |", rep.drainInFlight)
	p("| exit after SIGTERM | %s |", exitText(rep.exitErr))
	p("| token requests at the bank, max in a rolling minute | %d (budget %d) |", rep.maxPerMinute, o.budget)
	p("| client certificates the bank saw (distinct serials; rotations %d) | %d |", h.rotations, len(h.bank.Emu.Stats().HandshakesBySerial))
	trends := []trend{
		leakTrend("goroutines", rep.samples, func(s sample) float64 { return s.goroutines }, 1.5, 50),
		leakTrend("heap in use (bytes)", rep.samples, func(s sample) float64 { return s.heap }, 2, 8<<20),
		leakTrend("RSS (bytes)", rep.samples, func(s sample) float64 { return s.rss }, 2, 16<<20),
		leakTrend("open fds", rep.samples, func(s sample) float64 { return s.fds }, 1.5, 20),
	}
	p("")
	p("| resource | start | middle | end | after warm-up (median) | last quarter (median) | leak |")
	p("|---|---|---|---|---|---|---|")
	for _, tr := range trends {
		p("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %v |", tr.name, tr.start, tr.mid, tr.end, tr.warm, tr.late, tr.leak)
	}
	logs := string(h.proc.Logs())
	secrets := append(h.secretsIn(logs), h.secretsIn(rep.metricsText)...)
	p("")
	p("secrets found in the log (%d bytes) and the metrics: %d", len(logs), len(secrets))
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
	var verdict []string
	if t.byClass[classDefect] > 0 {
		verdict = append(verdict, fmt.Sprintf("%d defect-class failures", t.byClass[classDefect]))
	}
	if rep.maxPerMinute > o.budget {
		verdict = append(verdict, fmt.Sprintf("token budget overrun: %d > %d per minute", rep.maxPerMinute, o.budget))
	}
	for _, tr := range trends {
		if tr.leak {
			verdict = append(verdict, "leak trend in "+tr.name)
		}
	}
	if len(secrets) > 0 {
		verdict = append(verdict, "secrets found: "+strings.Join(secrets, ", "))
	}
	if rep.exitErr != nil {
		verdict = append(verdict, "tokenproxy did not exit cleanly after SIGTERM: "+rep.exitErr.Error())
	}
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
	if err := writeCSV(filepath.Join(o.out, "samples.csv"), rep.start, rep.samples); err != nil {
		return false, err
	}
	if err := os.WriteFile(filepath.Join(o.out, "events.csv"), []byte(h.tl.csv(rep.start)), 0o644); err != nil { //nolint:gosec // a report
		return false, err
	}
	if err := os.WriteFile(filepath.Join(o.out, "report.txt"), []byte(b.String()), 0o644); err != nil { //nolint:gosec // a report
		return false, err
	}
	return len(verdict) > 0, nil
}

func exitText(err error) string {
	if err == nil {
		return "0, within the grace period"
	}
	return err.Error()
}
