package consentstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tokenproxy/tokenproxy/vaultsrc"
	bolt "go.etcd.io/bbolt"
)

// Pending is a started consent waiting for the customer's return (consent API state).
type Pending struct {
	State, Route, Owner, Subject, Verifier, RedirectURI, ReturnURL string
	Expires                                                        time.Time
}

// String shows where the consent is for, never its state or PKCE verifier,
// so that printing a Pending by mistake leaks nothing.
func (p Pending) String() string {
	return fmt.Sprintf("pending consent for subject %q of %q on route %s until %s", p.Subject, p.Owner, p.Route, p.Expires.UTC().Format(time.RFC3339))
}

// GoString is String, for %#v.
func (p Pending) GoString() string { return p.String() }

// ErrPendingFull means the store holds as many started consents as it
// accepts; PutPending refuses more until some are taken or expire.
var ErrPendingFull = errors.New("too many started consents are waiting for their customer")

// MaxPending bounds the started consents a bbolt store keeps waiting.
const MaxPending = 10000

// maxPending is MaxPending; tests lower it.
var maxPending = MaxPending

// pendingRecord is the stored form of a Pending: the state itself is not
// kept, only its hash names the record.
type pendingRecord struct {
	Route       string    `json:"route"`
	Owner       string    `json:"owner"`
	Subject     string    `json:"subject"`
	Verifier    string    `json:"verifier,omitempty"`
	RedirectURI string    `json:"redirect_uri"`
	ReturnURL   string    `json:"return_url,omitempty"`
	Expires     time.Time `json:"expires"`
}

func encodePending(p *Pending) ([]byte, error) {
	if p.State == "" || len(p.State) > 512 {
		return nil, errors.New("a started consent's state must be 1 to 512 characters")
	}
	if err := ValidateKey(Key{Route: p.Route, Owner: p.Owner, Subject: p.Subject}); err != nil {
		return nil, err
	}
	b, err := json.Marshal(pendingRecord{Route: p.Route, Owner: p.Owner, Subject: p.Subject, Verifier: p.Verifier,
		RedirectURI: p.RedirectURI, ReturnURL: p.ReturnURL, Expires: p.Expires.UTC()})
	if err != nil {
		return nil, fmt.Errorf("encoding a started consent: %w", err)
	}
	return b, nil
}

func decodePending(state string, b []byte) (*Pending, error) {
	var r pendingRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, errors.New("decoding a started consent: not valid JSON")
	}
	return &Pending{State: state, Route: r.Route, Owner: r.Owner, Subject: r.Subject, Verifier: r.Verifier,
		RedirectURI: r.RedirectURI, ReturnURL: r.ReturnURL, Expires: r.Expires}, nil
}

// stateHash names a started consent in storage: the state itself is a
// bearer value and never written down.
func stateHash(state string) string {
	sum := sha256.Sum256([]byte("tokenproxy pending consent\x00" + state))
	return hex.EncodeToString(sum[:])
}

// SetClock sets the clock that decides whether a started consent has
// expired (default time.Now); call it before the store is used. The consent
// API's clock and the store's must agree.
func (b *Bolt) SetClock(now func() time.Time) { b.now = now }

func (b *Bolt) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

var (
	bucketPending = []byte("pending")
	pendingAAD    = []byte("tokenproxy-pending\x00")
)

// pendingAD binds a started consent's sealed record to its state's hash
// (key) and its expiry (exp).
func pendingAD(key, exp []byte) []byte {
	return append(append(append([]byte(nil), pendingAAD...), key...), exp...)
}

// PutPending implements Store. The record is sealed like a consent, bound
// to its state's hash; started consents that expired are swept in the same
// transaction.
func (b *Bolt) PutPending(_ context.Context, p *Pending) error {
	plain, err := encodePending(p)
	if err != nil {
		return err
	}
	key := []byte(stateHash(p.State))
	now := b.clock()
	err = b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketPending)
		if err != nil {
			return err
		}
		var expired [][]byte
		live := 0
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) < 8 || !now.Before(time.Unix(0, int64(binary.BigEndian.Uint64(v)))) { //nolint:gosec // G115: a Unix time in nanoseconds
				expired = append(expired, k)
			} else {
				live++
			}
		}
		for _, k := range expired {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		if bk.Get(key) != nil {
			return errors.New("that state is already in use")
		}
		if live >= maxPending {
			return ErrPendingFull
		}
		exp := binary.BigEndian.AppendUint64(nil, uint64(p.Expires.UnixNano()))
		return bk.Put(key, append(exp, b.ring.seal(plain, pendingAD(key, exp))...))
	})
	if err != nil {
		if errors.Is(err, ErrPendingFull) {
			return err
		}
		return fmt.Errorf("storing a started consent for subject %q on route %s: %w", p.Subject, p.Route, err)
	}
	return nil
}

// TakePending implements Store: one write transaction reads and deletes
// the record, so of two takers exactly one gets it.
func (b *Bolt) TakePending(_ context.Context, state string) (*Pending, error) {
	key := []byte(stateHash(state))
	var p *Pending
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPending)
		if bk == nil {
			return ErrNotFound
		}
		v := bk.Get(key)
		if v == nil {
			return ErrNotFound
		}
		v = append([]byte(nil), v...) // bbolt's value is gone once deleted
		if err := bk.Delete(key); err != nil {
			return err
		}
		if len(v) < 8 {
			return errOpen
		}
		plain, err := b.ring.open(v[8:], pendingAD(key, v[:8]))
		if err != nil {
			return err
		}
		if p, err = decodePending(state, plain); err != nil {
			return err
		}
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("taking a started consent: %w", err)
	}
	if !b.clock().Before(p.Expires) {
		return nil, ErrNotFound
	}
	return p, nil
}

// SetClock sets the clock that decides whether a started consent has
// expired (default time.Now); call it before the store is used. The consent
// API's clock and the store's must agree.
func (v *Vault) SetClock(now func() time.Time) { v.now = now }

func (v *Vault) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

// pendingDir is the folder of started consents under the store's base. Its
// leading underscore keeps it apart from route names, which start with a
// letter or digit.
const pendingDir = "_pending"

func (v *Vault) pendingPath(state string) string {
	return v.base + "/" + pendingDir + "/" + stateHash(state)
}

// Sweeping: at most every sweepEvery, a PutPending looks at up to
// sweepBatch started consents and deletes those that expired.
const (
	sweepEvery = time.Minute
	sweepBatch = 100
)

// PutPending implements Store: one secret per started consent at
// <base>/_pending/<hash of the state>, written only if none is there.
func (v *Vault) PutPending(ctx context.Context, p *Pending) error {
	plain, err := encodePending(p)
	if err != nil {
		return err
	}
	v.sweep(ctx)
	_, err = v.kv.WriteKVCAS(ctx, v.mount, v.pendingPath(p.State), map[string]any{"pending": string(plain)}, 0)
	if errors.Is(err, vaultsrc.ErrVersionConflict) {
		return fmt.Errorf("storing a started consent for subject %q on route %s: that state is already in use", p.Subject, p.Route)
	}
	if err != nil {
		return fmt.Errorf("storing a started consent for subject %q on route %s in vault kv %s: %w", p.Subject, p.Route, v.mount, err)
	}
	return nil
}

// TakePending implements Store. Single use is Vault's check-and-set: the
// taker reads the record's version, overwrites it with a "taken" marker at
// cas=version (of two takers that read the same version only one write
// succeeds), then deletes the secret.
func (v *Vault) TakePending(ctx context.Context, state string) (*Pending, error) {
	path := v.pendingPath(state)
	data, version, err := v.kv.ReadKV(ctx, v.mount, path)
	if errors.Is(err, vaultsrc.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading a started consent from vault kv %s: %w", v.mount, err)
	}
	rec, _ := data["pending"].(string)
	if rec == "" || version <= 0 {
		return nil, ErrNotFound // taken by another
	}
	p, err := decodePending(state, []byte(rec))
	if err != nil {
		return nil, err
	}
	_, err = v.kv.WriteKVCAS(ctx, v.mount, path, map[string]any{"taken": p.Expires.UTC().Format(time.RFC3339Nano)}, version)
	if errors.Is(err, vaultsrc.ErrVersionConflict) {
		return nil, ErrNotFound // another taker won
	}
	if err != nil {
		return nil, fmt.Errorf("taking a started consent in vault kv %s: %w", v.mount, err)
	}
	// The marker refuses the state from now on; a failed delete leaves it
	// for the sweep.
	_ = v.kv.DeleteKV(ctx, v.mount, path)
	if !v.clock().Before(p.Expires) {
		return nil, ErrNotFound
	}
	return p, nil
}

// sweep deletes started consents whose expiry passed (and "taken" markers
// a failed delete left), at most every sweepEvery and sweepBatch at a
// time; its errors only delay the cleaning.
func (v *Vault) sweep(ctx context.Context) {
	now := v.clock()
	v.sweepMu.Lock()
	due := v.swept.IsZero() || now.Sub(v.swept) >= sweepEvery || now.Before(v.swept)
	if due {
		v.swept = now
	}
	v.sweepMu.Unlock()
	if !due {
		return
	}
	names, err := v.list(ctx, v.base+"/"+pendingDir)
	if err != nil || len(names) == 0 {
		return
	}
	start := rand.IntN(len(names)) //nolint:gosec // G404: where to start sweeping needs no secrecy
	for i := range min(len(names), sweepBatch) {
		rel := v.base + "/" + pendingDir + "/" + names[(start+i)%len(names)]
		data, version, err := v.kv.ReadKV(ctx, v.mount, rel)
		if err != nil || version <= 0 {
			continue
		}
		var exp time.Time
		if rec, _ := data["pending"].(string); rec != "" {
			var r pendingRecord
			if json.Unmarshal([]byte(rec), &r) != nil {
				continue
			}
			exp = r.Expires
		} else if t, _ := data["taken"].(string); t != "" {
			exp, _ = time.Parse(time.RFC3339Nano, t)
		}
		if !exp.IsZero() && !now.Before(exp) {
			_ = v.kv.DeleteKV(ctx, v.mount, rel)
		}
	}
}
