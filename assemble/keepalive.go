package assemble

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// keepAliveTimeout bounds one keep-alive refresh, the wait for the token
// budget included.
const keepAliveTimeout = time.Minute

// keepAliveEvery is how often a route's keep-alive pass runs: a quarter of
// its keep_alive, between a minute and an hour.
func keepAliveEvery(keepAlive time.Duration) time.Duration {
	return min(max(keepAlive/4, time.Minute), time.Hour)
}

// keepAliveJobs returns one background job per authorization_code route
// with token.keep_alive. Each pass refreshes the route's consents that went
// unused that long (oauth.AuthCode.Idle) through the route's token cache,
// so the refreshes spend the route's token budget like any other, and a
// consent is refreshed once across replicas: one that another replica
// refreshed meanwhile holds a fresh token that Fetch uses instead. A pass
// stops early when the budget is spent (the next pass goes on).
func keepAliveJobs(routes []*route.Route, sources []*oauth.AuthCode, log *zap.Logger, om *metrics.OAuth) []func(context.Context) {
	var jobs []func(context.Context)
	for _, src := range sources {
		if src.KeepAlive() <= 0 {
			continue
		}
		var cache *tokencache.Cache
		for _, r := range routes {
			if r.Name == src.Route() {
				cache = r.Tokens
			}
		}
		if cache == nil {
			continue
		}
		log := log.With(zap.String("route", src.Route()))
		jobs = append(jobs, func(ctx context.Context) {
			t := time.NewTicker(keepAliveEvery(src.KeepAlive()))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				keepAlivePass(ctx, src, cache, log, om)
			}
		})
	}
	return jobs
}

// keepAlivePass runs one keep-alive pass over src's idle consents.
func keepAlivePass(ctx context.Context, src *oauth.AuthCode, cache *tokencache.Cache, log *zap.Logger, om *metrics.OAuth) {
	idle, err := src.Idle(ctx)
	if err != nil {
		log.Warn("keep-alive: listing idle consents failed", zap.Error(err))
		return
	}
	var ok, gone, failed int
	for _, k := range idle {
		fctx, cancel := context.WithTimeout(ctx, keepAliveTimeout)
		_, _, err := cache.Get(fctx, oauth.SubjectKey(k.Owner, k.Subject))
		cancel()
		var te *tokencache.ThrottledError
		var cr *tokencache.ConsentRequiredError
		result := "ok"
		switch {
		case err == nil:
			ok++
		case errors.As(err, &cr):
			result = "consent_required"
			gone++
		case errors.As(err, &te), ctx.Err() != nil:
			if om != nil {
				om.KeepAlive(src.Route(), "throttled")
			}
			log.Info("keep-alive pass stopped: the token budget is spent or the process is stopping; the next pass goes on",
				zap.Int("kept_alive", ok), zap.Int("left", len(idle)-ok-gone-failed))
			return
		default:
			result = "error"
			failed++
			log.Warn("keep-alive refresh failed", zap.String("subject", k.Subject), zap.Error(err))
		}
		if om != nil {
			om.KeepAlive(src.Route(), result)
		}
	}
	if len(idle) > 0 {
		log.Info("keep-alive pass", zap.Int("idle", len(idle)), zap.Int("kept_alive", ok),
			zap.Int("consent_required", gone), zap.Int("failed", failed))
	}
}
