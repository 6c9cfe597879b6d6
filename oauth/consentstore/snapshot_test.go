package consentstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A running tokenproxy holds the bbolt file (an exclusive flock, per open
// file description, so a second open in this process conflicts as a second
// process would). OpenBoltForCheck must not wait for it: it checks the key
// on a copy, read-only, within moments.
func TestOpenBoltForCheckBesideAHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consents.db")
	held, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ctx := context.Background()
	if _, err := held.Put(ctx, sample("cust-1"), 0); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	b, err := OpenBoltForCheck(path, testKey)
	if err != nil {
		t.Fatalf("OpenBoltForCheck beside a holder: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("OpenBoltForCheck took %v beside a holder; want well under a second", d)
	}
	if !b.Snapshot() {
		t.Fatal("Snapshot() = false; the file is held, so a copy was read")
	}
	c, err := b.Get(ctx, sample("cust-1").Key())
	if err != nil || c.RefreshToken.Reveal() != "rt-secret-cust-1" {
		t.Fatalf("reading the copy: %v, %v", c, err)
	}
	if _, err := b.Put(ctx, sample("cust-2"), 0); err == nil {
		t.Fatal("a write through the copy succeeded; it must be read-only")
	}
	cp := b.copyPath
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy %s is left behind: %v", cp, err)
	}

	other := bytes.Repeat([]byte{8}, KeySize)
	if _, err := OpenBoltForCheck(path, ring(other)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another key beside a holder: %v; want ErrWrongKey", err)
	}
	// The holder is untouched and still writes.
	if _, err := held.Put(ctx, sample("cust-3"), 0); err != nil {
		t.Fatalf("the holder after the check: %v", err)
	}
	// Opening for a run beside a holder says who holds the file.
	if _, err := OpenBolt(path, testKey); !errors.Is(err, ErrHeld) {
		t.Fatalf("OpenBolt beside a holder: %v; want ErrHeld", err)
	}
}

// Without a holder OpenBoltForCheck is OpenBolt: the file itself.
func TestOpenBoltForCheckAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "consents.db")
	b, err := OpenBoltForCheck(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Snapshot() {
		t.Fatal("Snapshot() = true without a holder")
	}
}

// Copies taken while the holder commits are consistent: each opens with
// the key and reads every consent the copy holds; none is torn.
func TestOpenBoltForCheckWhileWriting(t *testing.T) {
	if testing.Short() {
		t.Skip("writes for a while")
	}
	path := filepath.Join(t.TempDir(), "consents.db")
	held, err := OpenBolt(path, testKey)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		gen := uint64(0)
		for ctx.Err() == nil {
			c := sample("cust-busy")
			c.Scopes = []string{string(bytes.Repeat([]byte{'s'}, int(gen%4000)))}
			g, err := held.Put(ctx, c, gen)
			if err != nil {
				t.Errorf("holder write: %v", err)
				return
			}
			gen = g
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	for range 20 {
		b, err := OpenBoltForCheck(path, testKey)
		if err != nil {
			t.Fatalf("a copy while the holder writes: %v", err)
		}
		if _, err := b.List(ctx, Filter{AnyOwner: true}); err != nil {
			t.Fatalf("reading a copy taken while the holder writes: %v", err)
		}
		_ = b.Close()
	}
}
