package bankingcircle

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Host names used in Handshake.Host.
const (
	HostAPI  = "api"
	HostAuth = "auth"
)

// Stats counts what the emulator received since New or the last ResetStats.
type Stats struct {
	// TokenRequests counts requests to the authorize endpoint, whatever
	// their outcome.
	TokenRequests int
	// TokensIssued counts 200 answers carrying a new access token.
	TokensIssued int
	// TokenThrottled counts 429 answers (threshold or ForceThrottle).
	TokenThrottled int
	// TokenUnauthorized counts 401 answers on the authorization host
	// (missing or wrong Basic credentials).
	TokenUnauthorized int
	// APIRequests counts requests to the API host (authorize excluded).
	APIRequests int
	// APIUnauthorized counts 401 answers on the API host (missing, unknown,
	// revoked or expired bearer token).
	APIUnauthorized int
	// AccountsServed counts 200 answers of the accounts endpoints.
	AccountsServed int
	// AccountsNotFound counts 404 answers of the accounts endpoints (no
	// access to accounts, or an unknown account id).
	AccountsNotFound int
	// Forbidden counts 403 ip_not_whitelisted answers on either host.
	Forbidden int
	// ClientHellos counts TLS handshakes begun on either host (listeners
	// opened by Start, or configured with APITLSConfig/AuthTLSConfig);
	// ClientHellos - Handshakes is roughly the number that failed.
	ClientHellos int
	// Handshakes counts handshakes that verified a client certificate.
	Handshakes int
	// HandshakesByFingerprint counts handshakes per client leaf certificate,
	// keyed by Fingerprint (lowercase hex SHA-256 of the DER).
	HandshakesByFingerprint map[string]int
	// HandshakesBySerial counts handshakes per client leaf certificate
	// serial number, lowercase hex without leading zeros.
	HandshakesBySerial map[string]int
}

// Handshake records one verified TLS handshake.
type Handshake struct {
	Time        time.Time
	Host        string // HostAPI or HostAuth
	Fingerprint string // Fingerprint of the client leaf certificate
	Serial      string // lowercase hex serial of the client leaf certificate
	Subject     string // subject DN of the client leaf certificate
	Resumed     bool
}

// TokenRequest records one request to the authorize endpoint.
type TokenRequest struct {
	Time     time.Time
	ClientIP netip.Addr
	Status   int // HTTP status answered
}

// Fingerprint returns the lowercase hex SHA-256 of cert's DER encoding, the
// key of Stats.HandshakesByFingerprint (pki.Fingerprint computes the
// same).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// SerialHex returns cert's serial number as lowercase hex, the key of
// Stats.HandshakesBySerial.
func SerialHex(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

func (s *Server) recordHandshake(host string, leaf *x509.Certificate, resumed bool) {
	h := Handshake{
		Time:        s.now(),
		Host:        host,
		Fingerprint: Fingerprint(leaf),
		Serial:      SerialHex(leaf),
		Subject:     leaf.Subject.String(),
		Resumed:     resumed,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Handshakes++
	s.stats.HandshakesByFingerprint[h.Fingerprint]++
	s.stats.HandshakesBySerial[h.Serial]++
	s.handshakes = append(s.handshakes, h)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.HandshakesByFingerprint = maps.Clone(s.stats.HandshakesByFingerprint)
	st.HandshakesBySerial = maps.Clone(s.stats.HandshakesBySerial)
	return st
}

// Handshakes returns every verified handshake, oldest first.
func (s *Server) Handshakes() []Handshake {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.handshakes)
}

// IssuedTokens returns every access token issued since New, oldest first,
// including expired and revoked ones: tests use it to assert that no token
// ever reaches a log. ResetStats does not clear it.
func (s *Server) IssuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// TokenRequests returns every request to the authorize endpoint, oldest
// first.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tokenReqs)
}

// TokenRequestTimes returns the arrival time of every request to the
// authorize endpoint, oldest first, on the emulator's clock.
func (s *Server) TokenRequestTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]time.Time, len(s.tokenReqs))
	for i, r := range s.tokenReqs {
		out[i] = r.Time
	}
	return out
}

// MaxTokenRequestsInWindow returns the largest number of token requests
// that arrived within any span of length window (for example time.Minute),
// the figure to compare with a per-minute budget.
func MaxTokenRequestsInWindow(times []time.Time, window time.Duration) int {
	sorted := slices.Clone(times)
	slices.SortFunc(sorted, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi := range sorted {
		for sorted[hi].Sub(sorted[lo]) >= window {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// ResetStats zeroes the counters and forgets recorded handshakes and token
// requests. Issued tokens stay valid and listed; throttle windows keep
// counting.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = Stats{HandshakesByFingerprint: map[string]int{}, HandshakesBySerial: map[string]int{}}
	s.handshakes = nil
	s.tokenReqs = nil
}
