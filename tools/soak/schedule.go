package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
)

// phase is one step of the fault schedule: what the token endpoint and the
// API host do for its length.
type phase struct {
	name  string
	token bankingcircle.Fault
	api   bankingcircle.Fault
}

// phases play in a loop. Calm phases between faults let the cache recover,
// so that a failure in a calm phase stands out as a defect.
func phases() []phase {
	bc := func(k bankingcircle.FaultKind) bankingcircle.Fault { return bankingcircle.Fault{Kind: k} }
	return []phase{
		{name: "calm"},
		{name: "token 429 Retry-After 2s", token: bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 429, RetryAfter: 2 * time.Second}},
		{name: "calm"},
		{name: "token 429 no Retry-After", token: bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 429}},
		{name: "token 500", token: bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 500}},
		{name: "calm"},
		{name: "token slow 3s", token: bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: 3 * time.Second}},
		{name: "token reset", token: bc(bankingcircle.FaultReset)},
		{name: "calm"},
		{name: "token malformed JSON", token: bc(bankingcircle.FaultMalformed)},
		{name: "token expires_in 1s", token: bankingcircle.Fault{Kind: bankingcircle.FaultShortExpiry, Expiry: time.Second}},
		{name: "calm"},
		{name: "api 503 1 in 3", api: bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 503, Every: 3}},
		{name: "api slow 2s 1 in 4", api: bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: 2 * time.Second, Every: 4}},
		{name: "calm"},
		{name: "api reset 1 in 5", api: bankingcircle.Fault{Kind: bankingcircle.FaultReset, Every: 5}},
		{name: "api closes kept-alive connections", api: bc(bankingcircle.FaultCloseConn)},
		{name: "api malformed body 1 in 5", api: bankingcircle.Fault{Kind: bankingcircle.FaultMalformed, Every: 5}},
	}
}

// event is one change of conditions at a time.
type event struct {
	at    time.Time
	phase phase
	note  string // certificate rotation, Vault stop/start
}

// timeline records what was in force when, so that each failure can be
// judged against the conditions during its request.
type timeline struct {
	mu     sync.Mutex
	events []event
	// empty are the spans in which Vault ran again but did not yet hold
	// the bank's password (a dev server restarts empty; the soak writes
	// it back, as an operator's provisioning would): a token fetch then
	// finds no secret, which a restarted production Vault never shows.
	empty [][2]time.Time
}

// vaultEmpty records a span in which the restarted Vault lacked the password.
func (tl *timeline) vaultEmpty(from, to time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.empty = append(tl.empty, [2]time.Time{from, to})
}

// inVaultEmpty reports whether [start, end] overlaps a span in which the
// restarted Vault lacked the password (with a second's grace for the
// requests that were already waiting on the failed fetch).
func (tl *timeline) inVaultEmpty(start, end time.Time) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, w := range tl.empty {
		if w[0].Before(end) && w[1].Add(time.Second).After(start) {
			return true
		}
	}
	return false
}

func (tl *timeline) add(e event) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, e)
}

// excuse reports why a request in [start, end] could not have been served,
// or "" when nothing excused a failure then. A token fault excuses token
// errors until tokenGrace after it ends (back-off, an expired token with no
// successor); an API fault excuses upstream errors until apiGrace after.
func (tl *timeline) excuse(start, end time.Time, tokenSide bool) string {
	const tokenGrace, apiGrace = 15 * time.Second, 3 * time.Second
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for i, e := range tl.events {
		if e.note != "" {
			continue
		}
		until := time.Now()
		for _, n := range tl.events[i+1:] {
			if n.note == "" {
				until = n.at
				break
			}
		}
		f, grace := e.phase.api, apiGrace
		if tokenSide {
			f, grace = e.phase.token, tokenGrace
		}
		// A proxy must survive an upstream that closes kept-alive
		// connections and tokens that expire soon: those excuse nothing.
		if f.Kind == bankingcircle.FaultNone || f.Kind == bankingcircle.FaultCloseConn {
			continue
		}
		if e.at.Before(end) && until.Add(grace).After(start) {
			return e.phase.name
		}
	}
	return ""
}

// csv returns the timeline, one event a line, seconds from start.
func (tl *timeline) csv(start time.Time) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	b.WriteString("seconds,event\n")
	for _, e := range tl.events {
		name := e.note
		if name == "" {
			name = "phase: " + e.phase.name
		}
		fmt.Fprintf(&b, "%.1f,%s\n", e.at.Sub(start).Seconds(), name)
	}
	return b.String()
}

// phaseAt names the phase in force at t.
func (tl *timeline) phaseAt(t time.Time) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	name := ""
	for _, e := range tl.events {
		if e.note == "" && !e.at.After(t) {
			name = e.phase.name
		}
	}
	return name
}

// selectPhases keeps the calm phases and those whose names contain one of
// the comma-separated words of only ("" keeps all).
func selectPhases(ps []phase, only string) []phase {
	if only == "" {
		return ps
	}
	var out []phase
	for _, p := range ps {
		keep := p.name == "calm"
		for w := range strings.SplitSeq(only, ",") {
			if w = strings.TrimSpace(w); w != "" && strings.Contains(p.name, w) {
				keep = true
			}
		}
		if keep {
			out = append(out, p)
		}
	}
	return out
}
