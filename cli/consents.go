package cli

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/oauth"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/route"
)

// openConsents opens the consent store once for the process (nil without a
// consents: block) and returns bo with it and its counters wired in. A wrong or missing key
// is a configuration error naming the field, never the key. m may be nil
// (validate).
func openConsents(ctx context.Context, cfg *config.Config, bo route.Options, m *metrics.Metrics) (*route.Consents, *metrics.OAuth, route.Options, error) {
	c, err := route.OpenConsents(ctx, cfg, bo)
	if err != nil {
		return nil, nil, bo, &ExitError{Code: ExitConfig, Err: fmt.Errorf("the consent store is not usable:\n%w", err)}
	}
	if c == nil {
		return nil, nil, bo, nil
	}
	bo.Consents = c
	if m == nil {
		return c, nil, bo, nil
	}
	om := m.OAuth()
	bo.OAuthObserver = om
	return c, om, bo, nil
}

// serveConsents adds the consent API's listener and the census of the store
// (the consent gauges) to the server's options.
func serveConsents(cfg *config.Config, c *route.Consents, om *metrics.OAuth, routes []*route.Route, opts *proxy.Options, log *zap.Logger) error {
	if c == nil {
		return nil
	}
	api := c.APIConfig()
	api.Log = log.Named("consents")
	h, err := proxy.NewConsentHandler(routes, api)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	opts.ConsentAddr, opts.Consents = cfg.Consents.Listen, h
	var names []string
	for _, s := range c.Sources() {
		names = append(names, s.Route())
	}
	opts.Jobs = append(opts.Jobs, func(ctx context.Context) {
		c.Census(ctx, func(cs *oauth.Census, err error) {
			if err != nil {
				log.Warn("consent census failed", zap.Error(err))
			}
			om.Census(names, cs, err)
		})
	})
	return nil
}
