package bankingcircle

// Run-time controls: each changes one behaviour of a running emulator.

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// SetTokenTTL changes the lifetime of tokens issued from now on; zero or less
// restores DefaultTokenTTL. Tokens already issued keep their expiry.
func (s *Server) SetTokenTTL(d time.Duration) {
	if d <= 0 {
		d = DefaultTokenTTL
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = d
}

// SetTokenRequestsPerMinute changes the per-IP throttle threshold (0 disables
// it). Requests already counted stay counted.
func (s *Server) SetTokenRequestsPerMinute(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perMinute = max(n, 0)
}

// SetCredentials changes the M2M user's username and password, as when they
// are rotated at the bank.
func (s *Server) SetCredentials(username, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.username, s.password = username, password
}

// SetAllowedIPs replaces the source-IP allowlist; no argument allows every
// source.
func (s *Server) SetAllowedIPs(ips ...string) error {
	allowed, err := parseAllowed(ips)
	if err != nil {
		return fmt.Errorf("bankingcircle: SetAllowedIPs: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowed = allowed
	return nil
}

// SetNoAccountAccess switches the "user has no access to accounts" mode.
func (s *Server) SetNoAccountAccess(noAccess bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.noAccountAccess = noAccess
}

// ForceThrottle makes the next n token requests answer 429 with Retry-After
// retryAfter (rounded up to whole seconds; no header when zero or less),
// whatever the threshold. n = 0 cancels what is left of an earlier call.
func (s *Server) ForceThrottle(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forced429, s.forcedRetry = max(n, 0), retryAfter
}

// RevokeTokens invalidates every token issued so far: the next API call
// with any of them gets 401, as when the bank rejects a token before its
// expiry. IssuedTokens still lists them.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// SetClientCAs replaces the pool client certificates are verified against,
// from the next handshake on (for "the bank no longer trusts our
// certificate" tests).
func (s *Server) SetClientCAs(pool *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientCAs = pool
}

// SetTokenLatency delays every answer of the authorization host by d.
func (s *Server) SetTokenLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokenLatency = d
}

// SetAPILatency delays every answer of the API host by d.
func (s *Server) SetAPILatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiLatency = d
}

func parseAllowed(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		item = strings.TrimSpace(item)
		if strings.Contains(item, "/") {
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR prefix", item)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR prefix", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientIP is the source address of the connection, as the bank sees it;
// forwarding headers are ignored, as a bank ignores them.
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// allowedLocked reports whether ip may call; the caller holds s.mu.
func (s *Server) allowedLocked(ip netip.Addr) bool {
	if len(s.allowed) == 0 {
		return true
	}
	for _, p := range s.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
