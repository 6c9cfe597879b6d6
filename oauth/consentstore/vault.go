package consentstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// VaultKV is the Vault KV v2 access the Vault store needs. *vaultsrc.Client
// implements it: every call goes through its circuit breaker, logs in again
// when Vault refuses a revoked or expired token, and reports an outage as a
// *vaultsrc.UnavailableError. A missing secret matches vaultsrc.ErrNotFound
// and a refused check-and-set vaultsrc.ErrVersionConflict.
type VaultKV interface {
	ReadKV(ctx context.Context, mount, path string) (map[string]any, int, error)
	WriteKVCAS(ctx context.Context, mount, path string, data map[string]any, cas int) (int, error)
	ListKV(ctx context.Context, mount, path string) ([]string, error)
	DeleteKV(ctx context.Context, mount, path string) error
}

var _ VaultKV = (*vaultsrc.Client)(nil)

// Vault keeps consents in a Vault KV v2 mount, one secret per consent at
// <base>/<route>/o<owner>/<subject>. The generation is the KV version and
// every Put is a check-and-set write (cas = expected version), so Vault
// itself refuses the loser of two concurrent refreshes. Started consents
// (PutPending) live beside them at <base>/_pending/<hash of the state>.
// Vault encrypts its storage; the values are not sealed again.
type Vault struct {
	kv    VaultKV
	mount string
	base  string
	// now is the clock of started consents' expiry (SetClock); nil: time.Now.
	now func() time.Time

	sweepMu sync.Mutex
	swept   time.Time // when PutPending last swept expired started consents
}

// NewVault returns a store on the KV v2 mount, under base, reached through
// kv: the Vault client tokenproxy already uses (the composition root passes
// its *vaultsrc.Client). kv is not closed by Close.
func NewVault(kv VaultKV, mount, base string) *Vault {
	return &Vault{kv: kv, mount: strings.Trim(mount, "/"), base: strings.Trim(base, "/")}
}

func (v *Vault) rel(k Key) string {
	return v.base + "/" + k.Route + "/o" + k.Owner + "/" + k.Subject
}

// Get implements Store.
func (v *Vault) Get(ctx context.Context, k Key) (*Consent, error) {
	ctx, sp := startOp(ctx, "vault", opGet)
	defer sp.End()
	data, version, err := v.kv.ReadKV(ctx, v.mount, v.rel(k))
	if errors.Is(err, vaultsrc.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading consent for subject %q on route %s from vault kv %s: %w", k.Subject, k.Route, v.mount, err)
	}
	rec, _ := data["record"].(string)
	if rec == "" {
		return nil, ErrNotFound
	}
	c, err := decodeRecord([]byte(rec), uint64(max(version, 0)))
	if err != nil {
		return nil, err
	}
	if c.Key() != k {
		return nil, fmt.Errorf("vault kv %s/%s holds a consent for another subject", v.mount, v.rel(k))
	}
	return c, nil
}

// Put implements Store.
func (v *Vault) Put(ctx context.Context, c *Consent, expect uint64) (uint64, error) {
	ctx, sp := startOp(ctx, "vault", opPut)
	defer sp.End()
	if err := ValidateKey(c.Key()); err != nil {
		return 0, err
	}
	b, err := encodeRecord(c)
	if err != nil {
		return 0, err
	}
	version, err := v.kv.WriteKVCAS(ctx, v.mount, v.rel(c.Key()), map[string]any{"record": string(b)}, int(min(expect, math.MaxInt32)))
	if errors.Is(err, vaultsrc.ErrVersionConflict) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("writing consent for subject %q on route %s to vault kv %s: %w", c.Subject, c.Route, v.mount, err)
	}
	if version <= 0 {
		return 0, fmt.Errorf("writing consent for subject %q on route %s: vault gave no version", c.Subject, c.Route)
	}
	return uint64(version), nil
}

// Delete implements Store: it removes every version.
func (v *Vault) Delete(ctx context.Context, k Key) error {
	ctx, sp := startOp(ctx, "vault", opDelete)
	defer sp.End()
	if err := v.kv.DeleteKV(ctx, v.mount, v.rel(k)); err != nil {
		return fmt.Errorf("deleting consent for subject %q on route %s from vault kv %s: %w", k.Subject, k.Route, v.mount, err)
	}
	return nil
}

func (v *Vault) list(ctx context.Context, rel string) ([]string, error) {
	keys, err := v.kv.ListKV(ctx, v.mount, rel)
	if err != nil {
		return nil, fmt.Errorf("listing vault kv %s/%s: %w", v.mount, rel, err)
	}
	for i, k := range keys {
		keys[i] = strings.TrimSuffix(k, "/")
	}
	return keys, nil
}

// List implements Store. It reads every matching consent: meant for the
// consent API and periodic metrics, not a hot path.
func (v *Vault) List(ctx context.Context, f Filter) ([]*Consent, error) {
	routes := []string{f.Route}
	if f.Route == "" {
		var err error
		if routes, err = v.list(ctx, v.base); err != nil {
			return nil, err
		}
		routes = slices.DeleteFunc(routes, func(r string) bool { return r == pendingDir })
	}
	var out []*Consent
	for _, r := range routes {
		owners := []string{"o" + f.Owner}
		if f.AnyOwner {
			var err error
			if owners, err = v.list(ctx, v.base+"/"+r); err != nil {
				return nil, err
			}
		}
		for _, o := range owners {
			subs, err := v.list(ctx, v.base+"/"+r+"/"+o)
			if err != nil {
				return nil, err
			}
			for _, s := range subs {
				c, err := v.Get(ctx, Key{Route: r, Owner: strings.TrimPrefix(o, "o"), Subject: s})
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, err
				}
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// Close implements Store; the Vault client stays open.
func (v *Vault) Close() error { return nil }
