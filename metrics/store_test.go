package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestStoreMetrics(t *testing.T) {
	m := New()
	s := NewStore(m)
	s.SharedHit("bank")
	s.SharedHit("bank")
	s.LockWait("bank", 1500*time.Millisecond)
	s.FencingRejected("bank")
	s.KeyMiss("bank", "2026-06")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`tokenproxy_store_shared_hits_total{route="bank"} 2`,
		`tokenproxy_store_lock_waits_total{route="bank"} 1`,
		`tokenproxy_store_lock_wait_seconds_total{route="bank"} 1.5`,
		`tokenproxy_store_fencing_rejections_total{route="bank"} 1`,
		`tokenproxy_store_key_misses_total{key_id="2026-06",route="bank"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
