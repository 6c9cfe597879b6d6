package assemble

import (
	"context"
	"fmt"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
)

// buildCallers reads each gateway caller's password once, at start-up.
func buildCallers(ctx context.Context, cs []config.Caller, vault secret.VaultReader) (route.Callers, error) {
	set := route.Callers{}
	for i, c := range cs {
		if c.Certificate != nil && c.Password.IsZero() {
			continue // authenticates by client certificate only
		}
		p := fmt.Sprintf("callers[%d].password", i)
		src, err := c.Password.Open(vault)
		if err != nil {
			return nil, &problem.FieldError{Path: p, Err: err}
		}
		v, err := src.Get(ctx)
		if err != nil {
			return nil, &problem.FieldError{Path: p, Err: err, Fix: "make the secret available (" + src.String() + ")"}
		}
		set.Add(c.Name, v.Reveal())
	}
	return set, nil
}
