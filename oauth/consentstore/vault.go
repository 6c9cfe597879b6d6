package consentstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Vault keeps consents in a Vault KV v2 mount, one secret per consent at
// <base>/<route>/o<owner>/<subject>. The generation is the KV version and
// every Put is a check-and-set write (cas = expected version), so Vault
// itself refuses the loser of two concurrent refreshes. Vault encrypts its
// storage; the values are not sealed again.
type Vault struct {
	api   *api.Client
	mount string
	base  string
}

// NewVault returns a store on the KV v2 mount, under base. The client must
// be logged in (the route builder passes the Vault client tokenproxy already
// uses); it is not closed by Close.
func NewVault(client *api.Client, mount, base string) *Vault {
	return &Vault{api: client, mount: strings.Trim(mount, "/"), base: strings.Trim(base, "/")}
}

func (v *Vault) rel(k Key) string {
	return v.base + "/" + k.Route + "/o" + k.Owner + "/" + k.Subject
}

// Get implements Store.
func (v *Vault) Get(ctx context.Context, k Key) (*Consent, error) {
	s, err := v.api.KVv2(v.mount).Get(ctx, v.rel(k))
	if errors.Is(err, api.ErrSecretNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading consent for subject %q on route %s from vault kv %s: %w", k.Subject, k.Route, v.mount, err)
	}
	rec, _ := s.Data["record"].(string)
	if rec == "" || s.VersionMetadata == nil {
		return nil, ErrNotFound
	}
	c, err := decodeRecord([]byte(rec), uint64(max(s.VersionMetadata.Version, 0)))
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
	if err := ValidateKey(c.Key()); err != nil {
		return 0, err
	}
	b, err := encodeRecord(c)
	if err != nil {
		return 0, err
	}
	s, err := v.api.KVv2(v.mount).Put(ctx, v.rel(c.Key()), map[string]any{"record": string(b)}, api.WithCheckAndSet(int(min(expect, math.MaxInt32))))
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			return 0, ErrConflict
		}
		return 0, fmt.Errorf("writing consent for subject %q on route %s to vault kv %s: %w", c.Subject, c.Route, v.mount, err)
	}
	if s == nil || s.VersionMetadata == nil {
		return 0, fmt.Errorf("writing consent for subject %q on route %s: vault gave no version", c.Subject, c.Route)
	}
	return uint64(max(s.VersionMetadata.Version, 0)), nil
}

// Delete implements Store: it removes every version.
func (v *Vault) Delete(ctx context.Context, k Key) error {
	if err := v.api.KVv2(v.mount).DeleteMetadata(ctx, v.rel(k)); err != nil {
		return fmt.Errorf("deleting consent for subject %q on route %s from vault kv %s: %w", k.Subject, k.Route, v.mount, err)
	}
	return nil
}

func (v *Vault) list(ctx context.Context, rel string) ([]string, error) {
	s, err := v.api.Logical().ListWithContext(ctx, v.mount+"/metadata/"+rel)
	if err != nil {
		return nil, fmt.Errorf("listing vault kv %s/%s: %w", v.mount, rel, err)
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	raw, _ := s.Data["keys"].([]any)
	out := make([]string, 0, len(raw))
	for _, k := range raw {
		if str, ok := k.(string); ok {
			out = append(out, strings.TrimSuffix(str, "/"))
		}
	}
	return out, nil
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
