package certs

import (
	"crypto/tls"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Holder keeps the current certificate and hands it to TLS at handshake time,
// so a rotation reaches every new connection without a restart. Store swaps
// the pointer atomically; readers never block.
type Holder struct {
	cur atomic.Pointer[tls.Certificate]
	// at is when cur was stored (unix nanos; 0 before the first); stores
	// counts them. Both are read by the status page.
	at     atomic.Int64
	stores atomic.Uint64

	mu   sync.Mutex
	subs []func(*tls.Certificate)
}

// NewHolder returns a Holder serving c (which may be nil until the first Store).
func NewHolder(c *tls.Certificate) *Holder {
	h := &Holder{}
	if c != nil {
		h.cur.Store(c)
		h.at.Store(time.Now().UnixNano())
		h.stores.Store(1)
	}
	return h
}

// Load returns the current certificate, or nil if none was stored yet.
func (h *Holder) Load() *tls.Certificate { return h.cur.Load() }

// StoredAt returns when the current certificate was stored (at start-up or
// by the last rotation) and how many certificates were stored so far (1
// for the first, more after rotations); zero and 0 before the first.
func (h *Holder) StoredAt() (time.Time, uint64) {
	n := h.stores.Load()
	if n == 0 {
		return time.Time{}, 0
	}
	return time.Unix(0, h.at.Load()), n
}

// Store makes c the current certificate and notifies subscribers. Callers
// store only material that fully parsed and passed Check.
func (h *Holder) Store(c *tls.Certificate) {
	h.cur.Store(c)
	h.at.Store(time.Now().UnixNano())
	h.stores.Add(1)
	h.mu.Lock()
	subs := slices.Clone(h.subs)
	h.mu.Unlock()
	for _, fn := range subs {
		fn(c)
	}
}

// Subscribe registers fn to run after each Store, e.g. to close idle
// connections that were made with the previous certificate.
func (h *Holder) Subscribe(fn func(*tls.Certificate)) {
	h.mu.Lock()
	h.subs = append(h.subs, fn)
	h.mu.Unlock()
}

// errNotLoaded is returned to TLS when no certificate is held yet.
var errNotLoaded = errors.New("no client certificate loaded yet")

// GetClientCertificate implements tls.Config.GetClientCertificate.
func (h *Holder) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := h.cur.Load()
	if c == nil {
		return nil, errNotLoaded
	}
	return c, nil
}
