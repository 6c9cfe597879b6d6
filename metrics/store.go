package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store counts the shared token store's events (store.kind: redis). It
// implements redisstore.Observer and redisstore.KeyMissObserver.
type Store struct {
	lockWaits   *prometheus.CounterVec
	lockSeconds *prometheus.CounterVec
	sharedHits  *prometheus.CounterVec
	fencing     *prometheus.CounterVec
	keyMisses   *prometheus.CounterVec
}

// NewStore registers the shared store's metrics in m's registry; call it
// once, when the store is configured.
func NewStore(m *Metrics) *Store {
	s := &Store{
		lockWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_store_lock_waits_total",
			Help: "Token refreshes that waited for another replica's fetch of the same credential.",
		}, []string{"route"}),
		lockSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_store_lock_wait_seconds_total",
			Help: "Total time token refreshes waited for another replica's fetch.",
		}, []string{"route"}),
		sharedHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_store_shared_hits_total",
			Help: "Tokens taken from the shared store, fetched by another replica.",
		}, []string{"route"}),
		fencing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_store_fencing_rejections_total",
			Help: "Tokens fetched under an expired lock and not stored because a newer one was.",
		}, []string{"route"}),
		keyMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenproxy_store_key_misses_total",
			Help: "Reads of a shared token sealed under a key id this replica does not hold (treated as absent; the token is fetched anew).",
		}, []string{"route", "key_id"}),
	}
	m.reg.MustRegister(s.lockWaits, s.lockSeconds, s.sharedHits, s.fencing, s.keyMisses)
	return s
}

// SharedHit counts a token another replica fetched.
func (s *Store) SharedHit(route string) { s.sharedHits.WithLabelValues(route).Inc() }

// LockWait counts a wait of d for another replica's fetch.
func (s *Store) LockWait(route string, d time.Duration) {
	s.lockWaits.WithLabelValues(route).Inc()
	s.lockSeconds.WithLabelValues(route).Add(d.Seconds())
}

// FencingRejected counts a late token that was not stored.
func (s *Store) FencingRejected(route string) { s.fencing.WithLabelValues(route).Inc() }

// KeyMiss counts a shared token read as absent: sealed under keyID, which
// this replica does not hold ("" for the store's key from before key ids).
func (s *Store) KeyMiss(route, keyID string) { s.keyMisses.WithLabelValues(route, keyID).Inc() }
