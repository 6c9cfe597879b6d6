package consentstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// EventType names a consent event pushed to the app as a webhook.
type EventType string

// Consent events.
const (
	// EventActive: a code was exchanged and the consent stored.
	EventActive EventType = "consent.active"
	// EventRefreshed: the bank answered a refresh and the answer was stored.
	EventRefreshed EventType = "consent.refreshed"
	// EventExpiring: the refresh token expires within the lead time.
	EventExpiring EventType = "consent.expiring"
	// EventInvalid: the consent can no longer be used (Cause says why).
	EventInvalid EventType = "consent.invalid"
	// EventDeleted: the consent was deleted (revoked at the bank first when
	// Cause is CauseRevoked).
	EventDeleted EventType = "consent.deleted"
)

// EventTypes lists every event type.
var EventTypes = []EventType{EventActive, EventRefreshed, EventExpiring, EventInvalid, EventDeleted}

// Causes of consent.invalid and consent.deleted events.
const (
	// CauseInvalidGrant: the bank refused the refresh token (invalid_grant).
	CauseInvalidGrant = "invalid_grant"
	// CauseExpired: the refresh token's expiry has passed.
	CauseExpired = "expired"
	// CauseRevoked: the refresh token was revoked at the bank (RFC 7009)
	// before the consent was deleted.
	CauseRevoked = "revoked"
)

// Event is one consent event: the webhook body. It holds the consent's
// names and dates, never a token.
type Event struct {
	// ID is deterministic (EventID): the same event produced by several
	// replicas has one id, so appending it twice keeps one.
	ID            string    `json:"id"`
	Type          EventType `json:"type"`
	Created       time.Time `json:"created"`
	Route         string    `json:"route"`
	Owner         string    `json:"owner"`
	Subject       string    `json:"subject"`
	Cause         string    `json:"cause,omitempty"`
	RefreshExpiry time.Time `json:"refresh_expiry,omitzero"`
}

// Body is the event's JSON, the body each webhook receives.
func (e *Event) Body() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID, err)
	}
	return b, nil
}

// EventID is the id of an event of type typ about consent k: SHA-256 over
// type | route | owner | subject | incarnation | discriminator, where the
// incarnation is when the consent was created (a consent deleted and given
// again is a new one) and the discriminator the generation the event is
// about or, for the census's events, the refresh expiry.
func EventID(typ EventType, k Key, created time.Time, discriminator string) string {
	h := sha256.New()
	for _, s := range []string{string(typ), k.Route, k.Owner, k.Subject, strconv.FormatInt(created.UnixNano(), 10), discriminator} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return "evt_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// NewEvent is the event of type typ about c as stored at generation gen,
// created at now.
func NewEvent(typ EventType, c *Consent, gen uint64, cause string, now time.Time) Event {
	return Event{ID: EventID(typ, c.Key(), c.Created, "g"+strconv.FormatUint(gen, 10)), Type: typ, Created: now.UTC(),
		Route: c.Route, Owner: c.Owner, Subject: c.Subject, Cause: cause, RefreshExpiry: c.RefreshExpiry.UTC()}
}

// NewExpiryEvent is the census's event about c's refresh expiry: one per
// consent per expiry whichever replica takes the census.
func NewExpiryEvent(typ EventType, c *Consent, cause string, now time.Time) Event {
	return Event{ID: EventID(typ, c.Key(), c.Created, "x"+strconv.FormatInt(c.RefreshExpiry.UnixNano(), 10)), Type: typ, Created: now.UTC(),
		Route: c.Route, Owner: c.Owner, Subject: c.Subject, Cause: cause, RefreshExpiry: c.RefreshExpiry.UTC()}
}

// OutboxItem is an event in the outbox with its delivery state.
type OutboxItem struct {
	Event Event
	// Attempts counts the delivery rounds so far.
	Attempts int
	// NextAttempt is when the event is due.
	NextAttempt time.Time
	// Delivered lists the webhooks (by URL) that answered 2xx.
	Delivered []string
}

// Settlement is a dispatcher's outcome for a claimed event.
type Settlement struct {
	ID string
	// Delivered adds webhooks (by URL) that answered 2xx in this round.
	Delivered []string
	// Done: every webhook that wants the event has it, or GaveUp.
	Done bool
	// GaveUp: the event outlived the maximum age undelivered.
	GaveUp bool
	// Attempts and NextAttempt schedule the next round when not Done.
	Attempts    int
	NextAttempt time.Time
}

// Outbox keeps consent events durably until every webhook has them. Its
// methods are safe for several dispatchers (goroutines or replicas).
type Outbox interface {
	// Append adds the events absent from the outbox (by id) and returns
	// how many were new; appending an event again is not an error.
	Append(ctx context.Context, evs ...Event) (int, error)
	// Claim leases up to n events due at now to by until now+lease: no
	// other claim returns them before the lease ends or Settle releases it.
	Claim(ctx context.Context, by string, now time.Time, lease time.Duration, n int) ([]*OutboxItem, error)
	// Settle records a round's outcome and releases by's lease; the
	// delivered webhooks are recorded even when the lease was lost.
	Settle(ctx context.Context, by string, s Settlement, now time.Time) error
	// Backlog counts the undelivered events and gives the oldest one's
	// creation (zero when none).
	Backlog(ctx context.Context) (n int, oldest time.Time, err error)
	// Purge removes events settled before before and returns how many.
	Purge(ctx context.Context, before time.Time) (int, error)
}

// EventWriter is implemented by stores that append events in the same
// transaction as the consent write (Bolt, Postgres), so that a crash
// between the two cannot lose an event.
type EventWriter interface {
	// PutWithEvents is Put, appending evs (insert-if-absent) in the same
	// transaction.
	PutWithEvents(ctx context.Context, c *Consent, expect uint64, evs []Event) (uint64, error)
	// DeleteWithEvents is Delete, appending evs in the same transaction.
	DeleteWithEvents(ctx context.Context, k Key, evs []Event) error
}

// Exclusive is implemented by stores that can run a job once across every
// process sharing them: Postgres with an advisory lock, Bolt (one process)
// with an in-process one. RunExclusive runs fn if no other holder runs the
// job named name, and reports whether it ran.
type Exclusive interface {
	RunExclusive(ctx context.Context, name string, fn func(context.Context) error) (bool, error)
}

// OutboxOf returns s's outbox, or nil when s keeps none (Vault KV).
func OutboxOf(s Store) Outbox {
	o, _ := s.(Outbox)
	return o
}

func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return errBadEvent
	}
	return nil
}
