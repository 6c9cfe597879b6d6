package assemble

import (
	"context"
	"time"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/redisstore"
	"github.com/tokenproxy/tokenproxy/route"
)

// setFrequency gives route r the access budget of its frequency_per_day
// block (p is the block's path), counted where every replica sees the
// count and a restart keeps it: in Redis with store.kind redis, else in
// the consent store (bbolt, PostgreSQL).
func setFrequency(p string, r *route.Route, f *config.FrequencyPerDay, o Options) error {
	loc, err := f.Location()
	if err != nil {
		return &problem.FieldError{Path: p + ".time_zone", Err: err}
	}
	counter, err := accessCounter(p, o)
	if err != nil {
		return err
	}
	r.SetFrequency(route.Frequency{Limit: f.Limit, Location: loc, Methods: f.Methods, Paths: f.Paths,
		AttendedHeader: f.AttendedHeader, Counter: counter, Observer: o.AccessObserver})
	return nil
}

// accessCounter is the counter of access budgets: the shared store when
// there is one, else the consent store when it keeps counts.
func accessCounter(p string, o Options) (route.AccessCounter, error) {
	if o.Store != nil {
		return redisAccess{o.Store.Shared}, nil
	}
	if o.Consents != nil {
		if c, ok := o.Consents.Store.(consentAccess); ok {
			return storeAccess{c}, nil
		}
	}
	return nil, problem.Field(p, "no store keeps the count of calls: set store.kind: redis, or use a bbolt or postgres consent store")
}

// redisAccess counts in Redis.
type redisAccess struct{ s *redisstore.Shared }

func (a redisAccess) TakeAccess(ctx context.Context, k route.AccessKey, limit int, expires time.Time) (int, bool, error) {
	return a.s.TakeAccess(ctx, k.Route, k.Owner, k.Subject, k.Day, limit, expires)
}

// consentAccess is a consent store that keeps access counts (bbolt, PostgreSQL).
type consentAccess interface {
	TakeAccess(ctx context.Context, k consentstore.Key, day string, limit int, expires time.Time) (int, bool, error)
}

// storeAccess counts in the consent store.
type storeAccess struct{ s consentAccess }

func (a storeAccess) TakeAccess(ctx context.Context, k route.AccessKey, limit int, expires time.Time) (int, bool, error) {
	return a.s.TakeAccess(ctx, consentstore.Key{Route: k.Route, Owner: k.Owner, Subject: k.Subject}, k.Day, limit, expires)
}
