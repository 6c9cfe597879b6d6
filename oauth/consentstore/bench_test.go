package consentstore

import (
	"context"
	"encoding/binary"

	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

const benchSubjects = 100_000

// bulkLoad writes n sealed consents in a few large transactions (a real
// store fills one consent at a time; this only makes the fixture quick).
func bulkLoad(tb testing.TB, b *Bolt, n int) {
	tb.Helper()
	for start := 0; start < n; start += 10_000 {
		err := b.db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucketConsents)
			for i := start; i < min(n, start+10_000); i++ {
				c := sample("psu-" + strconv.Itoa(i))
				plain, err := encodeRecord(c)
				if err != nil {
					return err
				}
				val := binary.BigEndian.AppendUint64(nil, 1)
				val = append(val, b.seal.seal(plain, aad(c.Key(), 1))...)
				if err := bk.Put(dbKey(c.Key()), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// fixture100k returns the path of a store with 100,000 consents, made once per benchmark.
func fixture100k(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "100k.db")
	s, err := OpenBolt(path, testKey)
	if err != nil {
		b.Fatal(err)
	}
	bulkLoad(b, s, benchSubjects)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

func BenchmarkBoltGet100k(b *testing.B) {
	path := fixture100k(b)
	s, err := OpenBolt(path, testKey)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	keys := make([]Key, 1024)
	for i := range keys {
		keys[i] = Key{"bpce", "app-a", "psu-" + strconv.Itoa(i*97%benchSubjects)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBoltOpen100k(b *testing.B) {
	path := fixture100k(b)
	fi, _ := os.Stat(path)
	ctx := context.Background()
	var rssBefore, rssAfter float64
	for b.Loop() {
		runtime.GC()
		rssBefore = rssMiB()
		start := time.Now()
		s, err := OpenBolt(path, testKey)
		if err != nil {
			b.Fatal(err)
		}
		// Touch every consent once, as a census would.
		all, err := s.List(ctx, Filter{AnyOwner: true})
		if err != nil || len(all) != benchSubjects {
			b.Fatalf("%d consents, %v", len(all), err)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-open+list")
		rssAfter = rssMiB()
		_ = s.Close()
	}
	b.ReportMetric(rssAfter, "MiB-rss")
	b.ReportMetric(rssAfter-rssBefore, "MiB-rss-growth")
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
}

func BenchmarkBoltOpenOnly100k(b *testing.B) {
	path := fixture100k(b)
	for b.Loop() {
		s, err := OpenBolt(path, testKey)
		if err != nil {
			b.Fatal(err)
		}
		_ = s.Close()
	}
}

// BenchmarkBoltRefreshFsync is the store's share of one refresh: two
// compare-and-set writes (intent, answer), each committed with fsync.
func BenchmarkBoltRefreshFsync(b *testing.B) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "r.db"), testKey)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bulkLoad(b, s, 10_000)
	ctx := context.Background()
	c := sample("psu-1")
	gen := uint64(1)
	start := time.Now()
	for b.Loop() {
		for range 2 {
			if gen, err = s.Put(ctx, c, gen); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "refreshes/s")
}

func rssMiB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
