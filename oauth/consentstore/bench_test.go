package consentstore

import (
	"context"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
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
				if err := bk.Put(dbKey(c.Key()), b.sealValue(c.Key(), 1, plain)); err != nil {
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

// BenchmarkBoltOpen100k opens a 100,000-consent store in a fresh process
// (this test binary, re-run as TestOpenChild) and reads every consent, as a
// start-up census would; it reports that process's open time and peak RSS.
func BenchmarkBoltOpen100k(b *testing.B) {
	path := fixture100k(b)
	fi, _ := os.Stat(path)
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOpenChild$", "-test.count=1") //nolint:gosec // G702: re-runs this test binary
		cmd.Env = append(os.Environ(), "CONSENTSTORE_CHILD_PATH="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var openMS, listMS, hwm, rssOpen float64
		for _, l := range strings.Split(string(out), "\n") {
			if _, err := fmt.Sscanf(l, "child open_ms=%f list_ms=%f hwm_mib=%f rss_open_mib=%f", &openMS, &listMS, &hwm, &rssOpen); err == nil {
				break
			}
		}
		if hwm == 0 {
			b.Fatalf("child printed no figures:\n%s", out)
		}
		b.ReportMetric(openMS, "ms-open")
		b.ReportMetric(listMS, "ms-list-all")
		b.ReportMetric(hwm, "MiB-peak-rss")
		b.ReportMetric(rssOpen, "MiB-rss-open+1000-gets")
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB-file")
}

// TestOpenChild is BenchmarkBoltOpen100k's child process; it does nothing
// in a normal test run.
func TestOpenChild(t *testing.T) {
	path := os.Getenv("CONSENTSTORE_CHILD_PATH")
	if path == "" {
		t.Skip("only run by BenchmarkBoltOpen100k")
	}
	start := time.Now()
	s, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Since(start)
	for i := range 1000 {
		if _, err := s.Get(context.Background(), Key{"bpce", "app-a", "psu-" + strconv.Itoa(i*97)}); err != nil {
			t.Fatal(err)
		}
	}
	rssOpen := procStatusMiB("VmRSS:")
	n := 0
	err = s.Scan(context.Background(), Filter{AnyOwner: true}, func(*Consent) error { n++; return nil })
	if err != nil || n != benchSubjects {
		t.Fatalf("%d consents, %v", n, err)
	}
	listed := time.Since(start) - opened
	fmt.Printf("child open_ms=%.2f list_ms=%.0f hwm_mib=%.1f rss_open_mib=%.1f\n", float64(opened.Microseconds())/1000,
		float64(listed.Milliseconds()), procStatusMiB("VmHWM:"), rssOpen)
	_ = s.Close()
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

func procStatusMiB(field string) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
