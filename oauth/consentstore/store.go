// Package consentstore keeps the per-subject OAuth2 consents tokenproxy holds
// for apps: the refresh token the bank issued for one customer on one route,
// the scopes granted and when the tokens expire. Three implementations share
// the Store interface: an embedded bbolt file whose every value is sealed with
// AES-256-GCM (Bolt), Vault KV v2 (Vault), and a PostgreSQL table whose values
// are sealed as bbolt's are (Postgres). Writes are compare-and-set on
// the record's generation, so two refreshes of one subject can never both
// win, and durable (fsync, or Vault's own storage) before they return.
package consentstore

import (
	"context"
	"errors"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// State is where a consent stands.
type State string

// Consent states.
const (
	// Active: the refresh token is believed usable.
	Active State = "active"
	// Refreshing: a refresh was started (its intent recorded) and its answer
	// not yet stored. A crash leaves a consent in this state.
	Refreshing State = "refreshing"
	// Invalid: the bank rejected the refresh token; a new consent is needed.
	Invalid State = "invalid"
)

// Consent is one customer's consent on one route. RefreshToken and
// AccessToken are secret.Values, so printing a Consent never shows them.
type Consent struct {
	Route   string `json:"route"`
	Owner   string `json:"owner"` // the gateway caller that created it; "" in sidecar mode
	Subject string `json:"subject"`
	// Generation is set by the store: it grows by one at each write.
	Generation uint64 `json:"-"`

	State State  `json:"state"`
	Cause string `json:"cause,omitempty"` // why the consent is Invalid

	RefreshToken  secret.Value `json:"-"`
	RefreshExpiry time.Time    `json:"refresh_expiry,omitzero"` // zero when the bank did not say
	AccessToken   secret.Value `json:"-"`
	TokenType     string       `json:"token_type,omitempty"`
	// TokenBinding is the access token's tokencache.Token.Binding: the DPoP
	// key or client certificate it is bound to; "" for a bearer token.
	TokenBinding string    `json:"token_binding,omitempty"`
	AccessExpiry time.Time `json:"access_expiry,omitzero"`
	Scopes       []string  `json:"scopes,omitempty"`

	Created   time.Time `json:"created"`
	Refreshed time.Time `json:"refreshed,omitzero"` // when the bank last answered a refresh
	Refreshes int       `json:"refreshes"`

	// IntentAt and IntentBy describe the refresh in flight while State is Refreshing.
	IntentAt time.Time `json:"intent_at,omitzero"`
	IntentBy string    `json:"intent_by,omitempty"`
}

// Key names a consent.
type Key struct{ Route, Owner, Subject string }

// Key returns c's key.
func (c *Consent) Key() Key { return Key{c.Route, c.Owner, c.Subject} }

// Clone returns a copy that shares nothing mutable with c.
func (c *Consent) Clone() *Consent {
	d := *c
	d.Scopes = append([]string(nil), c.Scopes...)
	return &d
}

// Filter selects consents for List. Empty Route means every route. Owner is
// always matched exactly unless AnyOwner is set (for metrics, never for an
// API caller).
type Filter struct {
	Route    string
	Owner    string
	AnyOwner bool
}

func (f Filter) match(c *Consent) bool {
	return (f.Route == "" || f.Route == c.Route) && (f.AnyOwner || f.Owner == c.Owner)
}

// Errors of Store methods; test with errors.Is.
var (
	// ErrNotFound: no consent under that key.
	ErrNotFound = errors.New("no consent stored for this subject")
	// ErrConflict: the record's generation is not the one expected (another
	// writer won); re-read and decide again.
	ErrConflict = errors.New("the consent was changed by another writer")
)

// Store keeps consents durably.
type Store interface {
	// Get returns the consent for k, or ErrNotFound.
	Get(ctx context.Context, k Key) (*Consent, error)
	// Put writes c if the stored generation equals expect (0: none stored)
	// and returns the new generation; ErrConflict otherwise. It returns only
	// once the write is durable.
	Put(ctx context.Context, c *Consent, expect uint64) (uint64, error)
	// Delete removes the consent for k; deleting a missing one is not an error.
	Delete(ctx context.Context, k Key) error
	// List returns the consents f selects, in no particular order.
	List(ctx context.Context, f Filter) ([]*Consent, error)
	// PutPending keeps a started consent until the customer returns, for
	// every process that shares the store.
	PutPending(ctx context.Context, p *Pending) error
	// TakePending returns the started consent for state and atomically
	// removes it, so that it is used once across every process.
	TakePending(ctx context.Context, state string) (*Pending, error) // atomically removes it; ErrNotFound when unknown, taken or expired
	// Close releases the store.
	Close() error
}

// Scanner is implemented by stores that can visit consents one at a time
// (Bolt, Postgres); callers fall back to List otherwise (Visit).
type Scanner interface {
	Scan(ctx context.Context, f Filter, fn func(*Consent) error) error
}

// Counts is how many consents a store holds per route and state, and per
// route how many not invalid ones have a refresh token expiring by a time.
type Counts struct {
	ByState  map[string]map[State]int
	Expiring map[string]int
}

// Counter is implemented by stores that count consents without opening
// them (Postgres); a census of other stores visits every consent.
type Counter interface {
	Count(ctx context.Context, expiringBy time.Time) (*Counts, error)
}

// Visit calls fn with each consent of s that f selects: streamed when s is
// a Scanner, from List otherwise. fn must not write to s (a bbolt scan is
// a read transaction).
func Visit(ctx context.Context, s Store, f Filter, fn func(*Consent) error) error {
	if sc, ok := s.(Scanner); ok {
		return sc.Scan(ctx, f, fn)
	}
	list, err := s.List(ctx, f)
	if err != nil {
		return err
	}
	for _, c := range list {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}
