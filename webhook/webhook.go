// Package webhook delivers consent events to the app: each replica runs a
// Dispatcher that claims due events from the consent store's outbox
// (consentstore.Outbox) under a lease, POSTs each to every configured
// webhook whose filter wants it, signed with HMAC-SHA256 under the
// webhook's secret, and records which webhooks answered 2xx. An event a
// webhook did not take is retried with exponential back-off and jitter
// until it is delivered or older than MaxAge: at least once, so receivers
// deduplicate by the event id. A dispatcher that dies mid-delivery leaves
// its lease to expire; another dispatcher then delivers.
package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/backoff"
	"github.com/tokenproxy/tokenproxy/internal/version"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/secret"
)

// Hook is one webhook: where events go, the secret that signs them and
// the event types it wants.
type Hook struct {
	URL    string
	Secret secret.Source
	Events map[consentstore.EventType]bool
}

// Delivery results, the result label of the deliveries metric.
const (
	// ResultDelivered: the webhook answered 2xx.
	ResultDelivered = "delivered"
	// ResultFailed: another status or no answer; the event is retried.
	ResultFailed = "failed"
	// ResultGaveUp: the event outlived MaxAge before this webhook took it.
	ResultGaveUp = "gave_up"
)

// Observer counts deliveries and reports the backlog (the metrics
// implement it). Methods must be cheap and safe for concurrent use.
type Observer interface {
	// Delivery: one POST of an event to the webhook at url, or giving up on it.
	Delivery(url, result string)
	// Backlog: n events undelivered, the oldest created age ago (0 when none).
	Backlog(n int, age time.Duration)
}

// Defaults of Config.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultPoll       = time.Second
	DefaultLease      = 30 * time.Second
	DefaultBatch      = 20
	DefaultBackoff    = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	DefaultMaxAge     = 72 * time.Hour
	DefaultRetention  = 30 * 24 * time.Hour
)

// Config configures a Dispatcher; zero durations take the defaults.
type Config struct {
	Outbox consentstore.Outbox
	Hooks  []Hook
	// Client sends the deliveries (default: NewClient(Timeout)).
	Client *http.Client
	// Timeout bounds one POST, connection to answer (default 10 s).
	Timeout time.Duration
	// Poll is how often the outbox is looked at when idle (default 1 s).
	Poll time.Duration
	// Lease is how long a claimed event is this dispatcher's (default
	// 30 s, raised to cover one POST to every webhook).
	Lease time.Duration
	// Batch is how many events one claim takes (default 20).
	Batch int
	// Backoff and MaxBackoff shape the retries (internal/backoff.Delay).
	Backoff, MaxBackoff time.Duration
	// MaxAge: an event still undelivered this long after it was created is
	// given up (counted as gave_up) (default 72 h).
	MaxAge time.Duration
	// Retention: settled events are kept this long, so that the census
	// appending one again keeps one (default 30 days).
	Retention time.Duration
	// ID names this dispatcher in leases (default: random).
	ID       string
	Observer Observer
	// Log receives a line per failed delivery: the URL without its query,
	// the status or error, the event id; never the secret or the signature.
	Log *zap.Logger
	// Now and Rand are the clock and the jitter source (tests).
	Now  func() time.Time
	Rand func() float64
}

// Dispatcher delivers the outbox's events to the webhooks.
type Dispatcher struct {
	cfg Config
}

// NewClient is the delivery client: timeout per request, no redirects
// followed (a 3xx is a failed delivery), no proxy from the environment.
func NewClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	d := &net.Dialer{Timeout: min(timeout, 5*time.Second), KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: d.DialContext, TLSHandshakeTimeout: min(timeout, 5*time.Second),
			ResponseHeaderTimeout: timeout, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// New returns a dispatcher for cfg.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Outbox == nil {
		return nil, errors.New("webhooks: the consent store keeps no outbox")
	}
	for i, h := range cfg.Hooks {
		if err := CheckURL(h.URL); err != nil {
			return nil, fmt.Errorf("webhooks[%d].url: %w", i, err)
		}
		if h.Secret == nil {
			return nil, fmt.Errorf("webhooks[%d].secret: missing", i)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Timeout, DefaultTimeout)
	def(&cfg.Poll, DefaultPoll)
	def(&cfg.Lease, DefaultLease)
	def(&cfg.Backoff, DefaultBackoff)
	def(&cfg.MaxBackoff, DefaultMaxBackoff)
	def(&cfg.MaxAge, DefaultMaxAge)
	def(&cfg.Retention, DefaultRetention)
	cfg.Lease = max(cfg.Lease, time.Duration(len(cfg.Hooks))*cfg.Timeout+5*time.Second)
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Client == nil {
		cfg.Client = NewClient(cfg.Timeout)
	}
	if cfg.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.ID = hex.EncodeToString(b[:])
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = mrand.Float64
	}
	return &Dispatcher{cfg: cfg}, nil
}

// CheckURL accepts an absolute https URL, or http to a loopback host.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q must be an absolute https:// URL", raw)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q must be https:// (plain http only to a loopback address: the body and its signature would cross the network in clear)", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run delivers until ctx ends: a claim whenever the last one was full,
// otherwise every Poll; the backlog is reported and settled events older
// than Retention purged about once a minute.
func (d *Dispatcher) Run(ctx context.Context) {
	var lastHouse time.Time
	for ctx.Err() == nil {
		n, err := d.Step(ctx)
		if err != nil && ctx.Err() == nil {
			d.cfg.Log.Warn("webhook dispatcher: the outbox could not be read", zap.Error(err))
		}
		if now := d.cfg.Now(); now.Sub(lastHouse) >= time.Minute {
			lastHouse = now
			d.housekeep(ctx)
		}
		if n < d.cfg.Batch || err != nil {
			if backoff.Sleep(ctx, d.cfg.Poll, nil) != nil {
				return
			}
		}
	}
}

// housekeep reports the backlog and purges old settled events.
func (d *Dispatcher) housekeep(ctx context.Context) {
	now := d.cfg.Now()
	if _, err := d.cfg.Outbox.Purge(ctx, now.Add(-d.cfg.Retention)); err != nil && ctx.Err() == nil {
		d.cfg.Log.Warn("webhook dispatcher: purging delivered events failed", zap.Error(err))
	}
	d.ReportBacklog(ctx)
}

// ReportBacklog hands the observer the outbox's backlog.
func (d *Dispatcher) ReportBacklog(ctx context.Context) {
	if d.cfg.Observer == nil {
		return
	}
	n, oldest, err := d.cfg.Outbox.Backlog(ctx)
	if err != nil {
		return
	}
	age := time.Duration(0)
	if !oldest.IsZero() {
		age = max(d.cfg.Now().Sub(oldest), 0)
	}
	d.cfg.Observer.Backlog(n, age)
}

// Step claims one batch of due events, delivers them (events in
// parallel, each to its webhooks in turn) and settles them. It returns how
// many events it claimed.
func (d *Dispatcher) Step(ctx context.Context) (int, error) {
	items, err := d.cfg.Outbox.Claim(ctx, d.cfg.ID, d.cfg.Now(), d.cfg.Lease, d.cfg.Batch)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(items))
	for i, it := range items {
		wg.Go(func() { errs[i] = d.deliver(ctx, it) })
	}
	wg.Wait()
	return len(items), errors.Join(errs...)
}

// deliver sends one event to each webhook that wants it and has not got it.
func (d *Dispatcher) deliver(ctx context.Context, it *consentstore.OutboxItem) error {
	body, err := it.Event.Body()
	if err != nil {
		return err
	}
	s := consentstore.Settlement{ID: it.Event.ID}
	pending := 0
	for _, h := range d.cfg.Hooks {
		if !h.Events[it.Event.Type] || contains(it.Delivered, h.URL) {
			continue
		}
		if err := d.post(ctx, h, it, body); err != nil {
			pending++
			d.cfg.Log.Info("webhook delivery failed; it will be retried", zap.String("url", redactURL(h.URL)),
				zap.String("event_id", it.Event.ID), zap.String("event", string(it.Event.Type)), zap.Int("attempt", it.Attempts+1), zap.Error(err))
			d.observe(h.URL, ResultFailed)
			continue
		}
		s.Delivered = append(s.Delivered, h.URL)
		d.observe(h.URL, ResultDelivered)
	}
	now := d.cfg.Now()
	switch {
	case pending == 0:
		s.Done = true
	case now.Sub(it.Event.Created) >= d.cfg.MaxAge:
		s.Done, s.GaveUp = true, true
		for _, h := range d.cfg.Hooks {
			if h.Events[it.Event.Type] && !contains(it.Delivered, h.URL) && !contains(s.Delivered, h.URL) {
				d.observe(h.URL, ResultGaveUp)
				d.cfg.Log.Warn("webhook delivery given up: the event is older than max_age", zap.String("url", redactURL(h.URL)),
					zap.String("event_id", it.Event.ID), zap.String("event", string(it.Event.Type)), zap.Int("attempts", it.Attempts+1))
			}
		}
	default:
		s.Attempts = it.Attempts + 1
		s.NextAttempt = now.Add(backoff.Delay(s.Attempts, d.cfg.Backoff, d.cfg.MaxBackoff, d.cfg.Rand()))
	}
	// Recorded even when ctx ended (a graceful stop): the lease is released
	// and the webhooks that took the event are not sent it again.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return d.cfg.Outbox.Settle(sctx, d.cfg.ID, s, now)
}

// post sends one signed delivery; nil means 2xx.
func (d *Dispatcher) post(ctx context.Context, h Hook, it *consentstore.OutboxItem, body []byte) error {
	key, err := h.Secret.Get(ctx)
	if err != nil {
		return fmt.Errorf("reading the webhook's secret (%s): %w", h.Secret, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("the webhook URL does not make a request")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokenproxy/"+version.Version)
	req.Header.Set(HeaderEventID, it.Event.ID)
	req.Header.Set(HeaderEventType, string(it.Event.Type))
	req.Header.Set(HeaderSignature, Sign([]byte(key.Reveal()), d.cfg.Now(), body))
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL (and its query) stays out of the message
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the webhook answered HTTP %d", resp.StatusCode)
	}
	return nil
}

func (d *Dispatcher) observe(u, result string) {
	if d.cfg.Observer != nil {
		d.cfg.Observer.Delivery(u, result)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// redactURL is u without its query and user information.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.RawQuery, p.User, p.Fragment = "", nil, ""
	return p.String()
}
