package assemble

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
	"go.uber.org/zap"
)

// openKeyring reads a sealed store's key: or keys: (p is the store's path,
// e.g. consents.store.bbolt) into its keyring. A missing secret or a key of
// the wrong length names its field, never the key.
func openKeyring(ctx context.Context, p string, key secret.Ref, keys []config.StoreKey, o Options) (*consentstore.Keyring, error) {
	var ring []consentstore.StoreKey
	for i, k := range config.StoreKeys(key, keys) {
		kp := p + ".key"
		if len(keys) > 0 {
			kp = fmt.Sprintf("%s.keys[%d].key", p, i)
		}
		v, err := readRef(ctx, kp, k.Key, o)
		if err != nil {
			return nil, err
		}
		b, err := consentstore.ParseKey(v)
		if err != nil {
			return nil, &problem.FieldError{Path: kp, Err: err}
		}
		ring = append(ring, consentstore.StoreKey{ID: k.ID, Key: b})
	}
	r, err := consentstore.NewKeyring(ring...)
	if err != nil {
		return nil, &problem.FieldError{Path: p + ".keys", Err: err}
	}
	return r, nil
}

// keyError names the field to fix when a store refuses its keys; nil when
// err is not about keys.
func keyError(p string, keys []config.StoreKey, err error) error {
	field := p + ".key"
	if len(keys) > 0 {
		field = p + ".keys"
	}
	var mk *consentstore.MissingKeyError
	switch {
	case errors.As(err, &mk):
		return &problem.FieldError{Path: field, Err: err,
			Fix: "list every key the store's values are sealed under (" + strings.Join(quoteIDs(mk.IDs), ", ") + "); see docs/oauth.md, key rotation"}
	case errors.Is(err, consentstore.ErrWrongKey):
		return &problem.FieldError{Path: field, Err: err,
			Fix: "give the key the store knows under that id; a new key is listed under keys with an id of its own (docs/oauth.md, key rotation)"}
	}
	return nil
}

func quoteIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		if id == "" {
			out[i] = "the store's first key"
		} else {
			out[i] = fmt.Sprintf("%q", id)
		}
	}
	return out
}

// rekeyJob re-seals a bbolt store's values under its newest key in the
// background, batch by batch, while the process serves: the process that
// holds the file is the only one that can. Nil for other stores (`tokenproxy
// store rekey` re-seals Postgres from anywhere) and for a snapshot.
func (c *Consents) rekeyJob(log *zap.Logger) func(context.Context) {
	b, ok := c.Store.(*consentstore.Bolt)
	if !ok || b.Snapshot() {
		return nil
	}
	return func(ctx context.Context) {
		n, err := b.Stale(ctx)
		if err != nil || n == 0 {
			return
		}
		log.Info("re-sealing the consent store under its newest key", zap.Int("values", n), zap.String("key_id", b.SealingKey()))
		st, err := b.Rekey(ctx, consentstore.DefaultRekeyBatch, nil)
		if err != nil {
			log.Warn("re-sealing the consent store stopped; it goes on at the next start", zap.Int("resealed", st.Resealed), zap.Error(err))
			return
		}
		log.Info("consent store re-sealed; keys other than the first can be removed", zap.Int("resealed", st.Resealed), zap.String("key_id", b.SealingKey()))
	}
}
