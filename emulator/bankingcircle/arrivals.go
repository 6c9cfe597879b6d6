package bankingcircle

import (
	"net/http"
	"slices"
	"time"
)

// TokenArrival is one request to the authorize endpoint as it arrived,
// before any delay or fault: when, and which client certificate presented
// it (Fingerprint of the leaf, "" without one). Several clients sharing one
// IP and one budget can be told apart by it.
type TokenArrival struct {
	Time        time.Time
	Fingerprint string
}

// TokenArrivalsByClient returns every token request's arrival with the
// client certificate that sent it, oldest first (the same requests as
// TokenArrivals). ResetStats does not clear it.
func (s *Server) TokenArrivalsByClient() []TokenArrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.arrivalsBy)
}

// recordArrivalLocked notes a token request's arrival at now.
func (s *Server) recordArrivalLocked(r *http.Request, now time.Time) {
	s.arrivals = append(s.arrivals, now)
	a := TokenArrival{Time: now}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		a.Fingerprint = Fingerprint(r.TLS.PeerCertificates[0])
	}
	s.arrivalsBy = append(s.arrivalsBy, a)
}
