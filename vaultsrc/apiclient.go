package vaultsrc

import "github.com/hashicorp/vault/api"

// API returns the logged-in Vault API client, for stores that speak to Vault
// directly (the Vault KV consent store). Its token is swapped at each
// re-login, so it stays usable for the Client's lifetime; it must not be
// closed or have its token changed by the caller.
func (c *Client) API() *api.Client { return c.api }
