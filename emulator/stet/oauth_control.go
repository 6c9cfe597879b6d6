package stet

import (
	"net/url"
	"time"
)

// The methods below drive and observe the authorization server; they panic
// without Config.OAuth.

// Refreshes counts refresh_token grants answered with a token.
func (h *Handler) Refreshes() int {
	h.auth.mu.Lock()
	defer h.auth.mu.Unlock()
	return h.auth.refreshes
}

// SetRotate switches between rotating refresh tokens (true) and BPCE's
// same-token-back (false).
func (h *Handler) SetRotate(rotate bool) {
	h.auth.mu.Lock()
	h.auth.cfg.Rotate = rotate
	h.auth.mu.Unlock()
}

// SetTTL sets the lifetimes of tokens issued from now on.
func (h *Handler) SetTTL(accessTTL, refreshTTL time.Duration) {
	h.auth.mu.Lock()
	h.auth.cfg.AccessTTL, h.auth.cfg.RefreshTTL = accessTTL, refreshTTL
	h.auth.mu.Unlock()
}

// Throttle makes the next n token requests answer 429 with Retry-After: 7.
func (h *Handler) Throttle(n int) {
	h.auth.mu.Lock()
	h.auth.throttle = n
	h.auth.mu.Unlock()
}

// Issued returns every code, access and refresh token issued so far, for
// asserting that none leaked.
func (h *Handler) Issued() []string {
	h.auth.mu.Lock()
	defer h.auth.mu.Unlock()
	return append([]string(nil), h.auth.issued...)
}

// TokenRequests returns the forms of the token requests received.
func (h *Handler) TokenRequests() []url.Values {
	h.auth.mu.Lock()
	defer h.auth.mu.Unlock()
	return append([]url.Values(nil), h.auth.tokenReqs...)
}

// CustomerOf reports whose valid access token header ("Bearer ...") is.
func (h *Handler) CustomerOf(authorization string) (string, bool) {
	return h.auth.validAccess(authorization)
}
