package redisstore

import (
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/redistest"
)

// Redis restarted without its data: the generation counters start afresh,
// yet a replica holding a token from before the restart does not mistake the
// first token stored afterwards for its own and fetch again.
func TestRestartWithoutDataOneFetchPerExpiry(t *testing.T) {
	srv := redistest.Start(t)
	bk := newBank(time.Second, 20*time.Millisecond)
	var rs []*replica
	for range 3 {
		rs = append(rs, newReplica(t, srv, bk, replicaOpts{}))
	}
	storm(t, rs, "", 30)
	if n := bk.n.Load(); n != 1 {
		t.Fatalf("%d token requests before the restart; want 1", n)
	}
	srv.Stop()
	srv.Restart()
	for _, r := range rs {
		eventually(t, 5*time.Second, "replica back on Redis", func() bool {
			return r.shared.Up() && r.shared.Healthy() == nil
		})
	}
	time.Sleep(1100 * time.Millisecond) // the token held by every replica expires
	before := bk.n.Load()
	storm(t, rs, "", 300)
	if n := bk.n.Load() - before; n != 1 {
		t.Fatalf("%d token requests for one expiry after Redis lost its data; want 1", n)
	}
}
