package consentstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testClock is a settable clock shared by a test and its stores.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newState() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func samplePending(clk *testClock, subject string) *Pending {
	return &Pending{State: newState(), Route: "bpce", Owner: "app-a", Subject: subject, Verifier: "pkce-verifier-" + newState(),
		RedirectURI: "https://tp.example/v1/callback", ReturnURL: "https://app.example/done", Expires: clk.Now().Add(10 * time.Minute)}
}

func setClock(s Store, clk *testClock) {
	switch x := s.(type) {
	case *Bolt:
		x.SetClock(clk.Now)
	case *Vault:
		x.SetClock(clk.Now)
	}
}

// TestPending: a started consent is taken once, by exactly one of many
// concurrent takers, and never after it expired; on Vault the started
// consents stay out of the consents List sees.
func TestPending(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) opener
	}{{"bolt", boltOpener}, {"vault", vaultOpener}} {
		t.Run(tc.name, func(t *testing.T) {
			open := tc.open(t)
			s := open(t)
			defer s.Close()
			clk := &testClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
			setClock(s, clk)
			ctx := context.Background()

			p := samplePending(clk, "marc")
			if err := s.PutPending(ctx, p); err != nil {
				t.Fatal(err)
			}
			if err := s.PutPending(ctx, p); err == nil {
				t.Fatal("a second PutPending with the same state was accepted")
			}
			got, err := s.TakePending(ctx, p.State)
			if err != nil {
				t.Fatal(err)
			}
			if *got != *p {
				t.Fatalf("TakePending gave %+v, want %+v", got, p)
			}
			if _, err := s.TakePending(ctx, p.State); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second take: %v, want ErrNotFound", err)
			}
			if _, err := s.TakePending(ctx, newState()); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unknown state: %v, want ErrNotFound", err)
			}

			// Exactly one of many concurrent takers wins.
			p = samplePending(clk, "lea")
			if err := s.PutPending(ctx, p); err != nil {
				t.Fatal(err)
			}
			var won, lost atomic.Int32
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					_, err := s.TakePending(ctx, p.State)
					switch {
					case err == nil:
						won.Add(1)
					case errors.Is(err, ErrNotFound):
						lost.Add(1)
					default:
						t.Errorf("take: %v", err)
					}
				})
			}
			wg.Wait()
			if won.Load() != 1 || lost.Load() != 7 {
				t.Fatalf("%d takers won, %d lost; want 1 and 7", won.Load(), lost.Load())
			}

			// An expired state is not found, and is gone.
			p = samplePending(clk, "paul")
			if err := s.PutPending(ctx, p); err != nil {
				t.Fatal(err)
			}
			clk.Add(10 * time.Minute)
			if _, err := s.TakePending(ctx, p.State); !errors.Is(err, ErrNotFound) {
				t.Fatalf("expired state: %v, want ErrNotFound", err)
			}

			// A reopened store (another replica) takes what this one put.
			p = samplePending(clk, "anne")
			if err := s.PutPending(ctx, p); err != nil {
				t.Fatal(err)
			}
			if tc.name == "bolt" {
				_ = s.Close()
			}
			s2 := open(t)
			defer s2.Close()
			setClock(s2, clk)
			if got, err := s2.TakePending(ctx, p.State); err != nil || got.Verifier != p.Verifier {
				t.Fatalf("take through another store: %v", err)
			}
			if tc.name == "bolt" {
				return
			}
			if _, err := s.Put(ctx, sample("marc"), 0); err != nil {
				t.Fatal(err)
			}
			if err := s.PutPending(ctx, samplePending(clk, "zoe")); err != nil {
				t.Fatal(err)
			}
			all, err := s.List(ctx, Filter{AnyOwner: true})
			if err != nil || len(all) != 1 || all[0].Subject != "marc" {
				t.Fatalf("List with a started consent waiting: %v %v", all, err)
			}
		})
	}
}

// TestBoltPendingSweptAndBounded: expired started consents are deleted by
// the next PutPending, and no more than MaxPending (lowered here) wait at once.
func TestBoltPendingSweptAndBounded(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "consents.db"), testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	clk := &testClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	s.SetClock(clk.Now)
	ctx := context.Background()
	maxPending = 50
	t.Cleanup(func() { maxPending = MaxPending })
	for i := range maxPending {
		if err := s.PutPending(ctx, samplePending(clk, fmt.Sprint("s", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutPending(ctx, samplePending(clk, "one-too-many")); !errors.Is(err, ErrPendingFull) {
		t.Fatalf("PutPending beyond the bound: %v, want ErrPendingFull", err)
	}
	clk.Add(10 * time.Minute)
	if err := s.PutPending(ctx, samplePending(clk, "later")); err != nil {
		t.Fatalf("PutPending once the others expired: %v", err)
	}
	if n := countPending(t, s); n != 1 {
		t.Fatalf("%d started consents stored after the sweep, want 1", n)
	}
}

func countPending(t *testing.T, s *Bolt) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketPending).Stats().KeyN; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBoltPendingHoldsNoPlaintext: neither the state nor the PKCE verifier
// is readable in the store file.
func TestBoltPendingHoldsNoPlaintext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consents.db")
	s, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	clk := &testClock{t: time.Now()}
	p := samplePending(clk, "marc")
	if err := s.PutPending(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{p.State, p.Verifier, "app.example"} {
		if bytes.Contains(raw, []byte(x)) {
			t.Fatalf("the store file holds %.12s... in plaintext", x)
		}
	}
	if s := fmt.Sprint(p) + fmt.Sprintf("%+v %#v", *p, p); strings.Contains(s, p.Verifier) || strings.Contains(s, p.State) {
		t.Fatalf("printing a Pending shows its secrets: %s", s)
	}
}
