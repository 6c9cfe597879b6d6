// Package reload records the outcome of configuration reloads and watches
// the configuration file for changes. It is a leaf: the composition root
// (assemble) reloads, and whatever reports on the process (the admin
// listener's pages) reads the last Result.
package reload

import (
	"strings"
	"sync/atomic"
	"time"
)

// Outcome is how a reload ended.
type Outcome string

// Outcomes, as tokenproxy_config_reloads_total{result} counts them.
const (
	// Success: the new configuration serves.
	Success Outcome = "success"
	// Failure: it did not decode, validate or build; nothing changed.
	Failure Outcome = "failure"
	// Refused: it changes a setting that needs a restart; nothing changed.
	Refused Outcome = "refused"
)

// Triggers of a reload.
const (
	TriggerSignal = "signal" // SIGHUP
	TriggerAdmin  = "admin"  // POST /-/reload (tokenproxy reload)
	TriggerWatch  = "watch"  // the file changed (reload.watch)
)

// Result is one reload's outcome. It holds no secret: Error is the
// configuration's field-naming message, which never carries a secret's value.
type Result struct {
	// Time is when the reload ended; zero before any reload.
	Time    time.Time `json:"time"`
	Trigger string    `json:"trigger"`
	Outcome Outcome   `json:"outcome"`
	// Error says why the reload failed or was refused; empty on success.
	Error string `json:"error,omitempty"`
	// Restart names the settings that changed and need a restart (Refused).
	Restart []string `json:"restart,omitempty"`
	// The routes by what the reload did to them (Success).
	Kept    []string `json:"kept,omitempty"`
	Rebuilt []string `json:"rebuilt,omitempty"`
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// OK reports whether the reload succeeded.
func (r Result) OK() bool { return r.Outcome == Success }

// Summary says in one line what the reload did (the routes by what happened
// to them) or why it did nothing (the error).
func (r Result) Summary() string {
	if r.Time.IsZero() {
		return ""
	}
	if !r.OK() {
		return string(r.Outcome) + ": " + r.Error
	}
	var parts []string
	for _, g := range []struct {
		name   string
		routes []string
	}{{"kept", r.Kept}, {"rebuilt", r.Rebuilt}, {"added", r.Added}, {"removed", r.Removed}} {
		if len(g.routes) > 0 {
			parts = append(parts, g.name+" "+strings.Join(g.routes, ", "))
		}
	}
	if len(parts) == 0 {
		return "no route changed"
	}
	return strings.Join(parts, "; ")
}

// Status keeps the last Result; its methods are safe for concurrent use.
// The zero value holds no result.
type Status struct {
	last atomic.Pointer[Result]
}

// Record makes r the last result.
func (s *Status) Record(r Result) { s.last.Store(&r) }

// Last returns the last result; the zero Result (Time zero) before any reload.
func (s *Status) Last() Result {
	if r := s.last.Load(); r != nil {
		return *r
	}
	return Result{}
}
