package oauth

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// Events says which consent events an AuthCode appends to its store's
// outbox (consentstore.Outbox), for the webhook dispatcher to deliver.
type Events struct {
	// Types are the event types appended: the union of the webhooks'
	// filters. An event no webhook wants is not appended.
	Types map[consentstore.EventType]bool
	// Observer counts the events appended; may be nil.
	Observer EventObserver
	// Log receives a line when an event could not be appended after its
	// consent write (stores without EventWriter); nil discards.
	Log *zap.Logger
}

// EventObserver counts appended events (the metrics implement it).
type EventObserver interface {
	// EventsAppended: n events of type typ were added to the outbox.
	EventsAppended(typ consentstore.EventType, n int)
}

func (e *Events) wants(typ consentstore.EventType) bool { return e != nil && e.Types[typ] }

func (e *Events) appended(typ consentstore.EventType, n int) {
	if e != nil && e.Observer != nil && n > 0 {
		e.Observer.EventsAppended(typ, n)
	}
}

func (e *Events) log() *zap.Logger {
	if e == nil || e.Log == nil {
		return zap.NewNop()
	}
	return e.Log
}

// putEvent writes c at expect like Store.Put and, when the event type is
// wanted, appends the event about the new generation: in the same
// transaction where the store can (consentstore.EventWriter), else just
// after the write (a crash in between loses the event).
func (a *AuthCode) putEvent(ctx context.Context, c *consentstore.Consent, expect uint64, typ consentstore.EventType, cause string) (uint64, error) {
	ev := a.cfg.Events
	if !ev.wants(typ) {
		return a.cfg.Store.Put(ctx, c, expect)
	}
	evs := []consentstore.Event{consentstore.NewEvent(typ, c, expect+1, cause, a.cfg.Endpoint.Now())}
	if w, ok := a.cfg.Store.(consentstore.EventWriter); ok {
		gen, err := w.PutWithEvents(ctx, c, expect, evs)
		if err == nil {
			ev.appended(typ, 1)
		}
		return gen, err
	}
	gen, err := a.cfg.Store.Put(ctx, c, expect)
	if err != nil {
		return gen, err
	}
	a.appendAfter(ctx, typ, evs)
	return gen, nil
}

// deleteEvent deletes k like Store.Delete, with the consent.deleted event
// about c (as last stored) when wanted.
func (a *AuthCode) deleteEvent(ctx context.Context, c *consentstore.Consent, cause string) error {
	ev := a.cfg.Events
	if !ev.wants(consentstore.EventDeleted) {
		return a.cfg.Store.Delete(ctx, c.Key())
	}
	evs := []consentstore.Event{consentstore.NewEvent(consentstore.EventDeleted, c, c.Generation, cause, a.cfg.Endpoint.Now())}
	if w, ok := a.cfg.Store.(consentstore.EventWriter); ok {
		err := w.DeleteWithEvents(ctx, c.Key(), evs)
		if err == nil {
			ev.appended(consentstore.EventDeleted, 1)
		}
		return err
	}
	if err := a.cfg.Store.Delete(ctx, c.Key()); err != nil {
		return err
	}
	a.appendAfter(ctx, consentstore.EventDeleted, evs)
	return nil
}

func (a *AuthCode) appendAfter(ctx context.Context, typ consentstore.EventType, evs []consentstore.Event) {
	ob := consentstore.OutboxOf(a.cfg.Store)
	if ob == nil {
		return
	}
	n, err := ob.Append(context.WithoutCancel(ctx), evs...)
	if err != nil {
		a.cfg.Events.log().Warn("a consent event could not be appended to the outbox; the app's webhook will not see it",
			zap.String("route", a.Route()), zap.String("event", string(typ)), zap.String("event_id", evs[0].ID), zap.Error(err))
		return
	}
	a.cfg.Events.appended(typ, n)
}

// ExpiryJob is the name of the expiry census under
// consentstore.Exclusive.
const ExpiryJob = "consent-expiry-events"

// AppendExpiryEvents is the expiry census: it visits every consent and
// appends consent.expiring for each valid one whose refresh token expires
// after now and within the lead time within, and consent.invalid (cause
// expired) for each whose refresh token expired less than within ago, when
// ev wants them. The ids are over the consent and its refresh expiry, so
// the census may run on every replica and each event is kept once; on a
// store that implements consentstore.Exclusive it runs on one replica at a
// time (ran is false when another holds it). It returns how many events
// were new.
func AppendExpiryEvents(ctx context.Context, s consentstore.Store, ev *Events, now time.Time, within time.Duration) (appended int, ran bool, err error) {
	ob := consentstore.OutboxOf(s)
	if ob == nil || (!ev.wants(consentstore.EventExpiring) && !ev.wants(consentstore.EventInvalid)) {
		return 0, false, nil
	}
	run := func(ctx context.Context) error {
		var batch []consentstore.Event
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			n, err := ob.Append(ctx, batch...)
			appended += n
			// Counted by type: a batch may mix both.
			for _, typ := range []consentstore.EventType{consentstore.EventExpiring, consentstore.EventInvalid} {
				k := 0
				for _, e := range batch {
					if e.Type == typ {
						k++
					}
				}
				ev.appended(typ, min(k, n))
				n -= min(k, n)
			}
			batch = batch[:0]
			return err
		}
		visit := func(c *consentstore.Consent) error {
			if c.State == consentstore.Invalid || c.RefreshExpiry.IsZero() {
				return nil
			}
			left := c.RefreshExpiry.Sub(now)
			switch {
			case left > 0 && left <= within && ev.wants(consentstore.EventExpiring):
				batch = append(batch, consentstore.NewExpiryEvent(consentstore.EventExpiring, c, "", now))
			case left <= 0 && -left < within && ev.wants(consentstore.EventInvalid):
				batch = append(batch, consentstore.NewExpiryEvent(consentstore.EventInvalid, c, consentstore.CauseExpired, now))
			}
			if len(batch) >= 100 {
				return flush()
			}
			return nil
		}
		all := consentstore.Filter{AnyOwner: true}
		if sc, ok := s.(consentstore.Scanner); ok {
			if err := sc.Scan(ctx, all, visit); err != nil {
				return err
			}
		} else {
			list, err := s.List(ctx, all)
			if err != nil {
				return err
			}
			for _, c := range list {
				if err := visit(c); err != nil {
					return err
				}
			}
		}
		return flush()
	}
	if x, ok := s.(consentstore.Exclusive); ok {
		ran, err = x.RunExclusive(ctx, ExpiryJob, run)
		return appended, ran, err
	}
	return appended, true, run(ctx)
}
