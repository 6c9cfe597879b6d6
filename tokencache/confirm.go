package tokencache

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Confirmer is a Source whose per-subject tokens stand for a grant that can
// be withdrawn where this process does not see it: a customer's consent,
// deleted or made invalid through another replica that shares the consent
// store. With Options.ConfirmEvery set, the cache confirms a subject's
// grant before serving its token when the last confirmation is older than
// that, and before using a token it did not fetch itself (one read back
// from a shared store).
type Confirmer interface {
	// Confirm returns nil while subject's grant stands, a
	// *ConsentRequiredError once it is gone or invalid, and another error
	// when it cannot tell (the grant's store is unreachable).
	Confirm(ctx context.Context, subject string) error
}

// Forgetter is a Store that can withdraw a subject's shared token from
// every replica. The cache registers its Forget with OnForget when it is
// built.
type Forgetter interface {
	// Forget deletes subject's shared token, so that no replica reads it
	// back, keeps a fetch in flight from storing it again, and tells every
	// replica (the functions given to OnForget, in every process).
	Forget(ctx context.Context, subject string) error
	// OnForget registers fn, called with each subject forgotten by any
	// replica, this one included, until stop is called.
	OnForget(fn func(subject string)) (stop func())
}

// ForgetEverywhere drops subject's token here and, with a shared store that
// is a Forgetter, from the store and every replica's cache: for a consent
// deleted or made invalid. The local token is dropped even when the store
// fails; the error says the store may still hold it (replicas then drop it
// at their next confirmation, see Confirmer).
func (c *Cache) ForgetEverywhere(ctx context.Context, subject string) error {
	c.Forget(subject)
	if f, ok := c.store.(Forgetter); ok {
		return f.Forget(ctx, subject)
	}
	return nil
}

// forgetShared withdraws subject's shared token in the background of a
// confirmation or a fetch that found its grant gone.
func (c *Cache) forgetShared(subject string) {
	f, ok := c.store.(Forgetter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.FetchTimeout)
	defer cancel()
	if err := f.Forget(ctx, subject); err != nil {
		c.log.Warn("withdrawing a token from the shared store failed; replicas drop it at their next confirmation", zap.Error(err))
	}
}

// unconfirmed reports whether subject's token needs a confirmation before it
// is served at now. It does not allocate.
func (c *Cache) unconfirmed(e *entry, subject string, now time.Time) bool {
	return c.confirmer != nil && subject != "" && now.UnixNano()-e.confirmed.Load() >= int64(c.opts.ConfirmEvery)
}

// confirmThenGet confirms subject's grant (sharing the confirmation in
// flight, if any) and serves its token if the grant stands.
func (c *Cache) confirmThenGet(ctx context.Context, e *entry, subject string) (*Token, Outcome, error) {
	e.mu.Lock()
	cl := e.check
	if cl == nil {
		cl = &call{done: make(chan struct{})}
		e.check = cl
		// Shared by every waiter and bounded by its own timeout: one
		// caller's cancellation must not end it for the others.
		go c.confirm(e, subject, cl) //nolint:gosec // G118: the confirmation outlives the caller that started it, on purpose
	}
	e.mu.Unlock()
	t := time.NewTimer(c.opts.FetchTimeout)
	defer t.Stop()
	select {
	case <-cl.done:
	case <-t.C:
		return nil, Fetched, &ThrottledError{RetryAfter: time.Second, Reason: "the consent could not be confirmed in time"}
	case <-ctx.Done():
		return nil, Fetched, &ThrottledError{RetryAfter: time.Second, Reason: "the consent could not be confirmed in time"}
	}
	if cl.err != nil {
		return nil, Fetched, cl.err
	}
	if tok := e.cur.Load(); tok != nil && time.Now().Before(tok.usableUntil) {
		c.hit()
		return tok, Hit, nil
	}
	return c.wait(ctx, subject)
}

// confirm runs one confirmation of subject's grant for every caller
// waiting on cl. A withdrawn grant drops the subject's token, here and in
// the shared store; a confirmation that cannot tell keeps the token served
// (the grant's store is unreachable, so nobody could have withdrawn it
// there) and is tried again after another ConfirmEvery.
func (c *Cache) confirm(e *entry, subject string, cl *call) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.FetchTimeout)
	defer cancel()
	start := time.Now()
	err := c.confirmer.Confirm(ctx, subject)
	var ce *ConsentRequiredError
	withdrawn := errors.As(err, &ce)
	switch {
	case withdrawn:
		e.cur.Store(nil)
		c.subjects.CompareAndDelete(subject, e)
		cl.err = err
		c.log.Info("consent withdrawn; its token is no longer served", zap.Error(err))
	case err != nil:
		e.confirmed.Store(start.UnixNano())
		c.log.Warn("the consent could not be confirmed; its token is served until the next try", zap.Error(err))
	default:
		e.confirmed.Store(start.UnixNano())
	}
	e.mu.Lock()
	e.check = nil
	e.mu.Unlock()
	close(cl.done)
	if withdrawn {
		c.forgetShared(subject)
	}
}

// ErrWithdrawn is what a Store's Refresh returns when subject's token was
// withdrawn (Forgetter.Forget) while it was being fetched: the fetched
// token is not used. The cache reports it as the grant's confirmation
// does (a *ConsentRequiredError from a Confirmer).
var ErrWithdrawn = errors.New("the token was withdrawn while it was being fetched")
