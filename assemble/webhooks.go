package assemble

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// openWebhooks prepares consents.webhooks on the open store: the event
// types the sources append and the hooks with their secrets, each read
// once here so that a missing one fails at start-up.
func (c *Consents) openWebhooks(ctx context.Context, o Options) error {
	if len(c.cfg.Webhooks) == 0 {
		return nil
	}
	if consentstore.OutboxOf(c.Store) == nil {
		return problem.Field("consents.webhooks", "this consent store keeps no event outbox; use bbolt or postgres, or remove consents.webhooks")
	}
	ev := &oauth.Events{Types: map[consentstore.EventType]bool{}, Log: o.Log.Named("webhooks")}
	for i, w := range c.cfg.Webhooks {
		p := fmt.Sprintf("consents.webhooks[%d]", i)
		src, err := w.Secret.Open(o.vault())
		if err != nil {
			return &problem.FieldError{Path: p + ".secret", Err: err}
		}
		v, err := src.Get(ctx)
		if err != nil {
			return &problem.FieldError{Path: p + ".secret", Err: err, Fix: "make the secret available (" + src.String() + ")"}
		}
		if len(v.Reveal()) < 16 {
			return problem.Field(p+".secret", "is shorter than 16 characters; use a random secret, e.g. openssl rand -hex 32")
		}
		h := webhook.Hook{URL: w.URL, Secret: src, Events: map[consentstore.EventType]bool{}}
		for _, e := range w.Events {
			h.Events[consentstore.EventType(e)] = true
			ev.Types[consentstore.EventType(e)] = true
		}
		c.hooks = append(c.hooks, h)
	}
	c.Events = ev
	return nil
}

// webhookJobs are the dispatcher and the expiry census of
// consents.webhooks, for proxy.Options.Jobs; none without webhooks.
func (c *Consents) webhookJobs(log *zap.Logger, obs webhook.Observer) ([]func(context.Context), error) {
	if c.Events == nil || len(c.hooks) == 0 {
		return nil, nil
	}
	dc := c.cfg.WebhookDelivery
	d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(c.Store), Hooks: c.hooks, Timeout: dc.Timeout,
		Poll: dc.PollInterval, Lease: dc.Lease, Batch: dc.Batch, Backoff: dc.Backoff, MaxBackoff: dc.MaxBackoff,
		MaxAge: dc.MaxAge, Retention: dc.Retention, Observer: obs, Log: log})
	if err != nil {
		return nil, &problem.FieldError{Path: "consents.webhooks", Err: err}
	}
	census := func(ctx context.Context) {
		t := time.NewTicker(c.cfg.CensusInterval)
		defer t.Stop()
		for {
			n, ran, err := oauth.AppendExpiryEvents(ctx, c.Store, c.Events, time.Now(), c.cfg.ExpiringWithin)
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				log.Warn("the consent expiry census failed; it runs again in "+c.cfg.CensusInterval.String(), zap.Error(err))
			case ran && n > 0:
				log.Info("consent expiry events appended", zap.Int("events", n))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	return []func(context.Context){d.Run, census}, nil
}
