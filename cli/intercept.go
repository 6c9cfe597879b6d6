package cli

import (
	"context"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/route"
)

// validateProxyListener loads the interception CA (files, Vault PKI) and the proxy
// listener's certificate, as `run` would. A generated CA is left out: making
// one would write its certificate, and there is nothing to load.
func validateProxyListener(ctx context.Context, cfg *config.Config, bo route.Options) error {
	c := *cfg
	if ic := c.Interception; ic != nil && ic.CA.Generate != nil {
		c.Interception = nil
	}
	_, err := route.BuildProxyListener(ctx, &c, bo)
	return err
}
