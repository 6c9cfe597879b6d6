package vaultsrc

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/api"
)

// Logical reads and writes logical paths through the client (its breaker,
// its token, a re-login when Vault refuses it). The interception CA's Vault
// PKI signer uses it.
type Logical struct{ c *Client }

// Logical returns the client's logical read/write access.
func (c *Client) Logical() Logical { return Logical{c} }

// Read reads path and returns its data.
func (l Logical) Read(ctx context.Context, path string) (map[string]any, error) {
	s, err := l.c.do(ctx, "reading "+path, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().ReadWithContext(ctx, path)
	})
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("reading %s: nothing there", path)
	}
	return s.Data, nil
}

// Write writes data to path and returns the answer's data.
func (l Logical) Write(ctx context.Context, path string, data map[string]any) (map[string]any, error) {
	s, err := l.c.do(ctx, "writing "+path, func(ctx context.Context, a *api.Client) (*api.Secret, error) {
		return a.Logical().WriteWithContext(ctx, path, data)
	})
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("writing %s: empty answer", path)
	}
	return s.Data, nil
}
