package vaultsrc

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Health is a snapshot of the Vault client and of the sources built on it.
// OK is false while any component is failing; the material obtained before
// keeps serving, so a degraded client is not necessarily unable to serve.
type Health struct {
	OK         bool
	Components []ComponentHealth
}

// ComponentHealth is one part of the client: "vault" (reachability), "auth"
// (the login and its renewal), and one entry per certificate source, PKI
// issuer or Transit key in use. A Transit key has one entry, "vault transit
// <mount>/keys/<key>", updated both by its signatures and by the polls of
// its certificate source. A certificate source whose current version was
// refused stays failing until a good version is stored.
type ComponentHealth struct {
	Name string
	OK   bool
	// Since is when the component entered its current state.
	Since time.Time
	// LastOK is when the component last succeeded (zero if never).
	LastOK time.Time
	// Error is the last failure while not OK; it never contains a secret.
	Error string
}

// Err returns nil when every component is OK, else an error listing the
// failing ones, for a readiness endpoint or a log line.
func (h Health) Err() error {
	if h.OK {
		return nil
	}
	var parts []string
	for _, c := range h.Components {
		if !c.OK {
			parts = append(parts, fmt.Sprintf("%s failing since %s: %s", c.Name, c.Since.UTC().Format(time.RFC3339), c.Error))
		}
	}
	return errors.New("vault degraded: " + strings.Join(parts, "; "))
}

// healthBook records component states; it is safe for concurrent use.
type healthBook struct {
	now func() time.Time

	mu    sync.Mutex
	comps map[string]*ComponentHealth
}

func newHealthBook(now func() time.Time) *healthBook {
	return &healthBook{now: now, comps: map[string]*ComponentHealth{}}
}

// report records the outcome of an operation of component name and reports
// whether its state changed (for logging transitions once).
func (b *healthBook) report(name string, err error) (changed bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.comps[name]
	if !ok {
		c = &ComponentHealth{Name: name, OK: true, Since: now}
		b.comps[name] = c
		changed = err != nil
	}
	if err == nil {
		if !c.OK {
			changed = true
			c.Since = now
		}
		c.OK, c.Error, c.LastOK = true, "", now
		return changed
	}
	if c.OK {
		changed = true
		c.Since = now
	}
	c.OK, c.Error = false, err.Error()
	return changed
}

func (b *healthBook) snapshot() Health {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := Health{OK: true}
	for _, c := range b.comps {
		h.Components = append(h.Components, *c)
		if !c.OK {
			h.OK = false
		}
	}
	slices.SortFunc(h.Components, func(a, b ComponentHealth) int { return strings.Compare(a.Name, b.Name) })
	return h
}
