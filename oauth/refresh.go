package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// errAborted is what a crash hook's error becomes.
var errAborted = errors.New("refresh aborted by a test hook")

// minValid is how long a token someone else just stored must still be valid
// for this call to use it instead of refreshing, capped for short-lived
// tokens exactly as the cache caps its skew (tokencache.Usable): a 20 s token
// stored a moment ago is used, not refreshed.
const minValid = 30 * time.Second

// Fetch implements tokencache.Source. key is SubjectKey(owner, subject).
//
// It reads the consent; if it holds a valid access token this instance has
// not returned yet (after a restart, or one another process stored), it
// returns that token; otherwise it records the intent to
// refresh (compare-and-set on the generation), calls the token endpoint with
// grant_type=refresh_token, and stores the answer (the new refresh token, or
// the old one when the bank sent none) before returning the access token.
// No consent, or invalid_grant, is a *tokencache.ConsentRequiredError.
func (a *AuthCode) Fetch(ctx context.Context, key string) (*tokencache.Token, error) {
	owner, subject := SplitSubjectKey(key)
	k := consentstore.Key{Route: a.Route(), Owner: owner, Subject: subject}
	if err := consentstore.ValidateKey(k); err != nil {
		return nil, a.consentRequired(subject, "the subject name is not valid: "+err.Error())
	}
	start := a.cfg.Endpoint.Now()
	mu := a.lock(k)
	mu.Lock()
	defer mu.Unlock()
	for range 8 {
		c, err := a.cfg.Store.Get(ctx, k)
		if errors.Is(err, consentstore.ErrNotFound) {
			return nil, a.consentRequired(subject, "no consent is stored for this subject on route "+a.Route()+"; start one with the consent API")
		}
		if err != nil {
			return nil, &tokencache.FetchError{Reason: "route " + a.Route() + ": reading the consent store", Err: err}
		}
		now := a.cfg.Endpoint.Now()
		switch {
		case c.State == consentstore.Invalid:
			return nil, a.consentRequired(subject, c.Cause)
		case c.State == consentstore.Active && tokencache.Usable(minValid, tokenOf(c), now) &&
			c.TokenBinding == a.cfg.Endpoint.Binding() &&
			(!c.Refreshed.Before(start) || !a.handedOut(k, c.Generation)):
			// Another caller refreshed while this one waited, or the stored
			// token is one this instance never gave out (a restart): no refresh,
			// which at BPCE would revoke that token. A token bound to another
			// key or certificate than the route's now is refreshed.
			return a.handOut(k, c.Generation, tokenOf(c)), nil
		case c.State == consentstore.Refreshing && c.IntentBy != a.id && now.Sub(c.IntentAt) < a.cfg.IntentLease:
			if err := a.waitForChange(ctx, k, c.Generation, c.IntentAt.Add(a.cfg.IntentLease)); err != nil {
				return nil, err
			}
			continue
		}
		tok, err := a.refresh(ctx, c, now)
		if errors.Is(err, consentstore.ErrConflict) {
			continue
		}
		return tok, err
	}
	return nil, &tokencache.FetchError{Reason: "route " + a.Route() + ": the consent kept changing under this refresh"}
}

// waitForChange polls the store until the consent's generation moves past
// gen, the deadline passes, or ctx ends.
func (a *AuthCode) waitForChange(ctx context.Context, k consentstore.Key, gen uint64, deadline time.Time) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for range 1000 {
		select {
		case <-ctx.Done():
			return &tokencache.FetchError{Reason: "route " + a.Route() + ": waiting for another refresh of this subject", Err: ctx.Err()}
		case <-t.C:
		}
		c, err := a.cfg.Store.Get(ctx, k)
		if err != nil || c.Generation != gen || !a.cfg.Endpoint.Now().Before(deadline) {
			return nil
		}
	}
	return nil
}

func (a *AuthCode) hook(s Step, subject string) error {
	if a.cfg.Hooks == nil || a.cfg.Hooks.After == nil {
		return nil
	}
	if err := a.cfg.Hooks.After(s, subject); err != nil {
		return fmt.Errorf("%w at %s: %w", errAborted, s, err)
	}
	return nil
}

// refresh runs the three steps on consent c as read at generation c.Generation.
func (a *AuthCode) refresh(ctx context.Context, c *consentstore.Consent, now time.Time) (*tokencache.Token, error) {
	// An intent left by an interrupted refresh: the bank may have answered
	// it, and its time (not this refresh's) explains a later invalid_grant.
	interrupted := c.State == consentstore.Refreshing
	interruptedAt := c.IntentAt
	intent := c.Clone()
	intent.State, intent.IntentAt, intent.IntentBy = consentstore.Refreshing, now, a.id
	gen, err := a.cfg.Store.Put(ctx, intent, c.Generation)
	if err != nil {
		if errors.Is(err, consentstore.ErrConflict) {
			return nil, err
		}
		return nil, &tokencache.FetchError{Reason: "route " + a.Route() + ": recording the refresh intent", Err: err}
	}
	if err := a.hook(StepIntentRecorded, c.Subject); err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.RefreshToken.Reveal()}}
	resp, callErr := a.cfg.Endpoint.token(ctx, form)
	if err := a.hook(StepBankAnswered, c.Subject); err != nil {
		return nil, err
	}
	if callErr != nil {
		return nil, a.refreshFailed(ctx, intent, gen, interrupted, interruptedAt, callErr)
	}
	next := intent.Clone()
	a.applyAnswer(next, resp, a.cfg.Endpoint.Now())
	stored, err := a.putEvent(ctx, next, gen, consentstore.EventRefreshed, "")
	if err != nil {
		// The token is not used: a rotated refresh token that could not be
		// stored must not be followed by a token the store cannot renew.
		return nil, &tokencache.FetchError{Reason: "route " + a.Route() + ": storing the bank's answer", Err: err}
	}
	if err := a.hook(StepAnswerStored, c.Subject); err != nil {
		return nil, err
	}
	if a.cfg.Observer != nil {
		a.cfg.Observer.Refreshed(a.Route())
	}
	return a.handOut(c.Key(), stored, resp.Token), nil
}

// refreshFailed records the outcome of a refused refresh: invalid_grant
// makes the consent invalid; another explicit refusal (4xx, 429) clears the
// intent, since the bank did not use the refresh token; a transport error or
// 5xx leaves the intent, as the bank may have used it. interrupted says this
// refresh took over the intent of an interrupted one, started at
// interruptedAt (zero when unknown).
func (a *AuthCode) refreshFailed(ctx context.Context, intent *consentstore.Consent, gen uint64, interrupted bool, interruptedAt time.Time, callErr error) error {
	var ee *endpointError
	if !errors.As(callErr, &ee) {
		return &tokencache.FetchError{Reason: "route " + a.Route() + ": refresh", Err: callErr}
	}
	switch {
	case ee.Code == "invalid_grant":
		cause := "the bank rejected the refresh token (invalid_grant: expired, revoked or already used)"
		if interrupted {
			started := "an earlier refresh"
			if !interruptedAt.IsZero() {
				started = "the refresh started at " + interruptedAt.UTC().Format(time.RFC3339)
			}
			cause = "the bank rejected the refresh token (invalid_grant) after an interrupted refresh: " +
				"the bank's answer to " + started + " was never stored"
		}
		bad := intent.Clone()
		bad.State, bad.Cause, bad.IntentAt, bad.IntentBy = consentstore.Invalid, cause, time.Time{}, ""
		bad.AccessToken, bad.RefreshToken = secret.Value{}, secret.Value{}
		if _, err := a.putEvent(ctx, bad, gen, consentstore.EventInvalid, consentstore.CauseInvalidGrant); err != nil && !errors.Is(err, consentstore.ErrConflict) {
			return &tokencache.FetchError{Reason: "route " + a.Route() + ": recording an invalid consent", Err: err}
		}
		if a.cfg.Observer != nil {
			a.cfg.Observer.InvalidGrant(a.Route())
		}
		return a.consentRequired(intent.Subject, cause)
	case ee.Status >= 400 && ee.Status < 500:
		back := intent.Clone()
		back.State, back.IntentAt, back.IntentBy = consentstore.Active, time.Time{}, ""
		if interrupted {
			// Still marked: the interrupted refresh's answer may be lost. Its
			// time is not kept, so that nobody waits out a lease for it.
			back.State = consentstore.Refreshing
		}
		_, _ = a.cfg.Store.Put(ctx, back, gen) // best effort: a left intent is taken over later
	}
	return ee.toFetchError()
}

// Confirm implements tokencache.Confirmer: one read of the consent store,
// no call to the bank. A consent that is gone (deleted through any replica)
// or invalid (invalid_grant) is a *tokencache.ConsentRequiredError; a store
// that cannot be read is a *tokencache.FetchError.
func (a *AuthCode) Confirm(ctx context.Context, key string) error {
	owner, subject := SplitSubjectKey(key)
	k := consentstore.Key{Route: a.Route(), Owner: owner, Subject: subject}
	c, err := a.cfg.Store.Get(ctx, k)
	switch {
	case errors.Is(err, consentstore.ErrNotFound):
		return a.consentRequired(subject, "the consent for this subject on route "+a.Route()+" was deleted; start a new one with the consent API")
	case err != nil:
		return &tokencache.FetchError{Reason: "route " + a.Route() + ": reading the consent store", Err: err}
	case c.State == consentstore.Invalid:
		return a.consentRequired(subject, c.Cause)
	}
	return nil
}
