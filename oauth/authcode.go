package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/oauth/discovery"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// AuthCodeConfig configures an authorization_code + refresh_token route.
type AuthCodeConfig struct {
	// Endpoint is the token endpoint, its client (mTLS) and client authentication.
	Endpoint Endpoint
	// AuthorizeURL is the bank's authorization endpoint; when empty, the
	// metadata's (Endpoint.Discovery).
	AuthorizeURL string
	// RevocationURL, when set (or in the metadata), is called (RFC 7009)
	// when a consent is deleted.
	RevocationURL string
	// Pushed shapes the authorization request: PAR, a request object, the
	// iss check (par.go).
	Pushed
	// Scopes are requested at authorization.
	Scopes []string
	// PKCE adds an S256 code challenge to the authorization request.
	PKCE bool
	// RefreshTTL is the refresh token's lifetime when the bank does not say
	// (BPCE: 90 days); 0 means unknown.
	RefreshTTL time.Duration
	// Store keeps the consents.
	Store consentstore.Store
	// Observer receives refresh and invalid_grant counts; may be nil.
	Observer Observer
	// KeepAlive, when positive, is how long a consent may go unused before
	// the keep-alive refreshes it (Idle).
	KeepAlive time.Duration
	// IntentLease is how long a refresh recorded by another process is
	// waited for before it is taken over as abandoned (default 30 s).
	IntentLease time.Duration
	// Hooks are crash-injection points for tests; nil in production.
	Hooks *Hooks
	// Events, when set, says which consent events to append to the
	// store's outbox for the app's webhooks.
	Events *Events
}

// Step is a point in a refresh where a test may inject a crash.
type Step int

// Refresh steps, in order.
const (
	// StepIntentRecorded: the intent to refresh is stored; the bank not yet called.
	StepIntentRecorded Step = iota + 1
	// StepBankAnswered: the bank answered; its answer is not yet stored.
	StepBankAnswered
	// StepAnswerStored: the answer is stored; the token not yet returned.
	StepAnswerStored
)

func (s Step) String() string {
	return [...]string{"", "intent recorded", "bank answered", "answer stored"}[s]
}

// Hooks are called after each refresh step. A non-nil error from After
// aborts the refresh at once, with no further write: a simulated crash.
type Hooks struct {
	After func(step Step, subject string) error
}

// AuthCode is the per-subject source: Fetch refreshes the subject's access
// token with its stored refresh token, storing the bank's answer durably
// before returning. It is safe for concurrent use, also by several processes
// sharing one store: the intent record is a compare-and-set on the consent's
// generation, and the loser uses the winner's token.
type AuthCode struct {
	cfg   AuthCodeConfig
	id    string // this instance, in intent records
	locks [64]sync.Mutex
	seed  maphash.Seed

	handedMu    sync.Mutex
	handed      map[consentstore.Key]handed // the access token this instance last returned, per subject
	handedSwept time.Time                   // when expired entries were last dropped from handed
}

// NewAuthCode returns the source for one route.
func NewAuthCode(cfg AuthCodeConfig) (*AuthCode, error) {
	if err := cfg.Endpoint.validate(); err != nil {
		return nil, err
	}
	route := cfg.Endpoint.Route
	if u, err := url.Parse(cfg.Endpoint.endpoint(discovery.Authorization, cfg.AuthorizeURL)); err != nil || u.Host == "" {
		return nil, fmt.Errorf("route %s: authorize_url must be an absolute URL", route)
	}
	if err := cfg.validate(&cfg.Endpoint); err != nil {
		return nil, fmt.Errorf("route %s: %w", route, err)
	}
	if cfg.Store == nil {
		return nil, fmt.Errorf("route %s: no consent store", route)
	}
	if cfg.IntentLease <= 0 {
		cfg.IntentLease = 30 * time.Second
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &AuthCode{cfg: cfg, id: hex.EncodeToString(b[:]), seed: maphash.MakeSeed(), handed: map[consentstore.Key]handed{}}, nil
}

// Route is the route's name.
func (a *AuthCode) Route() string { return a.cfg.Endpoint.Route }

// Host implements tokencache.Source.
func (a *AuthCode) Host() string { return a.cfg.Endpoint.host() }

// SubjectKey is the cache key naming subject of owner (the gateway caller;
// "" in sidecar mode): what the proxy passes to Cache.Get and Fetch. Owners
// and subjects hold no '/', so the key is unambiguous and two callers'
// subjects of the same name never share a token.
func SubjectKey(owner, subject string) string {
	if owner == "" {
		return subject
	}
	return owner + "/" + subject
}

// SplitSubjectKey undoes SubjectKey.
func SplitSubjectKey(key string) (owner, subject string) {
	if o, s, ok := strings.Cut(key, "/"); ok {
		return o, s
	}
	return "", key
}

func (a *AuthCode) lock(k consentstore.Key) *sync.Mutex {
	return &a.locks[maphash.String(a.seed, k.Owner+"/"+k.Subject)%uint64(len(a.locks))]
}

func (a *AuthCode) consentRequired(subject, cause string) error {
	return &tokencache.ConsentRequiredError{Subject: subject, Cause: cause}
}

// AuthorizeURL is the bank's authorization URL for one consent, with the
// request's parameters in its query (no PAR, no request object).
func (a *AuthCode) AuthorizeURL(state, codeChallenge, redirectURI string) string {
	return a.authorizeURL(a.params(state, codeChallenge, redirectURI))
}

// authorizeURL is the authorization endpoint with q added to its query.
func (a *AuthCode) authorizeURL(q url.Values) string {
	u, _ := url.Parse(a.cfg.Endpoint.endpoint(discovery.Authorization, a.cfg.AuthorizeURL))
	all := u.Query()
	for k, v := range q {
		all[k] = v
	}
	u.RawQuery = all.Encode()
	return u.String()
}

// params are the authorization request's parameters for one consent.
func (a *AuthCode) params(state, codeChallenge, redirectURI string) url.Values {
	q := url.Values{}
	q.Set("response_type", "code")
	q.Set("client_id", a.cfg.Endpoint.Auth.ClientID)
	q.Set("redirect_uri", redirectURI)
	q.Set("state", state)
	if len(a.cfg.Scopes) > 0 {
		q.Set("scope", strings.Join(a.cfg.Scopes, " "))
	}
	if codeChallenge != "" {
		q.Set("code_challenge", codeChallenge)
		q.Set("code_challenge_method", "S256")
	}
	if a.cfg.DPoPJKT != "" {
		q.Set("dpop_jkt", a.cfg.DPoPJKT)
	}
	return q
}

// PKCE reports whether the route sends a code challenge.
func (a *AuthCode) PKCE() bool { return a.cfg.PKCE }

// Exchange trades an authorization code for tokens over the route's client
// and stores the consent for owner's subject, replacing any earlier one.
func (a *AuthCode) Exchange(ctx context.Context, owner, subject, code, verifier, redirectURI string) (*consentstore.Consent, error) {
	k := consentstore.Key{Route: a.Route(), Owner: owner, Subject: subject}
	if err := consentstore.ValidateKey(k); err != nil {
		return nil, err
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	resp, err := a.cfg.Endpoint.token(ctx, form)
	if err != nil {
		return nil, err
	}
	if resp.RefreshToken.IsZero() {
		return nil, fmt.Errorf("route %s: the bank's answer to the code exchange has no refresh_token", a.Route())
	}
	now := a.cfg.Endpoint.Now()
	c := &consentstore.Consent{Route: k.Route, Owner: owner, Subject: subject, State: consentstore.Active, Created: now}
	a.applyAnswer(c, resp, now)
	c.Refreshes = 0
	for range 3 {
		old, err := a.cfg.Store.Get(ctx, k)
		var gen uint64
		switch {
		case err == nil:
			gen = old.Generation
		case !errors.Is(err, consentstore.ErrNotFound):
			return nil, fmt.Errorf("route %s: %w", a.Route(), err)
		}
		if c.Generation, err = a.putEvent(ctx, c, gen, consentstore.EventActive, ""); err == nil {
			return c, nil
		}
		if !errors.Is(err, consentstore.ErrConflict) {
			return nil, fmt.Errorf("route %s: storing the new consent: %w", a.Route(), err)
		}
	}
	return nil, fmt.Errorf("route %s: storing the new consent: %w", a.Route(), consentstore.ErrConflict)
}

// applyAnswer puts a token answer into c: the refresh token only when the
// bank sent one (BPCE may send the same one back, or none).
func (a *AuthCode) applyAnswer(c *consentstore.Consent, r *Response, now time.Time) {
	c.State, c.Cause, c.IntentAt, c.IntentBy = consentstore.Active, "", time.Time{}, ""
	if !r.RefreshToken.IsZero() {
		if r.RefreshToken.Reveal() != c.RefreshToken.Reveal() || c.RefreshExpiry.IsZero() {
			c.RefreshExpiry = time.Time{}
			if a.cfg.RefreshTTL > 0 {
				c.RefreshExpiry = now.Add(a.cfg.RefreshTTL)
			}
		}
		c.RefreshToken = r.RefreshToken
	}
	if !r.RefreshExpiry.IsZero() {
		c.RefreshExpiry = r.RefreshExpiry
	}
	c.AccessToken, c.TokenType, c.AccessExpiry = secret.New(r.Token.Value), r.Token.Type, r.Token.Expiry
	c.TokenBinding = r.Token.Binding
	if r.Scopes != nil {
		c.Scopes = r.Scopes
	}
	c.Refreshed = now
	c.Refreshes++
}

// Revoke deletes owner's consent for subject, first revoking its refresh
// token at the bank when the route has a revocation endpoint. A failed
// revocation keeps the consent, so it can be retried.
func (a *AuthCode) Revoke(ctx context.Context, owner, subject string) error {
	k := consentstore.Key{Route: a.Route(), Owner: owner, Subject: subject}
	c, err := a.cfg.Store.Get(ctx, k)
	if err != nil {
		return err
	}
	revocationURL := a.cfg.Endpoint.endpoint(discovery.Revocation, a.cfg.RevocationURL)
	if revocationURL != "" && !c.RefreshToken.IsZero() {
		ep := a.cfg.Endpoint
		form := url.Values{"token": {c.RefreshToken.Reveal()}, "token_type_hint": {"refresh_token"}}
		hdr := map[string][]string{}
		now := ep.Now()
		if err := ep.Auth.apply(ctx, revocationURL, form, hdr, now); err != nil {
			return &endpointError{Route: a.Route(), Endpoint: "revocation", Err: err}
		}
		if _, err := post(ctx, ep.Client, a.Route(), "revocation", revocationURL, form, hdr, now); err != nil {
			return err
		}
	}
	a.handedMu.Lock()
	delete(a.handed, k)
	a.handedMu.Unlock()
	cause := ""
	if revocationURL != "" && !c.RefreshToken.IsZero() {
		cause = consentstore.CauseRevoked
	}
	return a.deleteEvent(ctx, c, cause)
}

// tokenOf returns the access token stored in c, issued when c was last
// refreshed (so that its lifetime, which caps the skew, is known).
func tokenOf(c *consentstore.Consent) *tokencache.Token {
	typ := c.TokenType
	if typ == "" {
		typ = "Bearer"
	}
	return &tokencache.Token{Value: c.AccessToken.Reveal(), Type: typ, Expiry: c.AccessExpiry, Issued: c.Refreshed,
		Header: typ + " " + c.AccessToken.Reveal(), Binding: c.TokenBinding}
}

// handed is the access token this instance last returned for a subject:
// the generation it was stored at, and its expiry.
type handed struct {
	gen    uint64
	expiry time.Time
}

// handedSweepEvery is how often handOut drops the entries of tokens that
// expired: past its expiry a token is not used again whoever returned it,
// so memory follows the customers served within a token's lifetime, not
// every customer ever served.
const handedSweepEvery = time.Minute

// handOut records that the access token stored at generation gen is being
// returned for k, and returns it.
func (a *AuthCode) handOut(k consentstore.Key, gen uint64, t *tokencache.Token) *tokencache.Token {
	now := a.cfg.Endpoint.Now()
	a.handedMu.Lock()
	a.handed[k] = handed{gen: gen, expiry: t.Expiry}
	if now.Sub(a.handedSwept) >= handedSweepEvery {
		a.handedSwept = now
		for key, h := range a.handed {
			if !h.expiry.IsZero() && h.expiry.Before(now) {
				delete(a.handed, key)
			}
		}
	}
	a.handedMu.Unlock()
	return t
}

// handedOut reports whether this instance already returned the access token
// stored at generation gen: asked again, the caller wants a new one (the old
// one expired or the bank refused it).
func (a *AuthCode) handedOut(k consentstore.Key, gen uint64) bool {
	a.handedMu.Lock()
	defer a.handedMu.Unlock()
	h, ok := a.handed[k]
	return ok && h.gen == gen
}

// handedCount is how many subjects handed holds (for tests).
func (a *AuthCode) handedCount() int {
	a.handedMu.Lock()
	defer a.handedMu.Unlock()
	return len(a.handed)
}
