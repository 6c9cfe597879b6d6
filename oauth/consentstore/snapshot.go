package consentstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	// checkLockTimeout is how long OpenBoltForCheck waits for the file's
	// lock before it reads a copy instead.
	checkLockTimeout = 250 * time.Millisecond
	// snapshotAttempts bounds the copies tried while commits keep landing.
	snapshotAttempts = 20
	// boltMagic marks a bbolt meta page.
	boltMagic = 0xED0CDAED
)

// OpenBoltForCheck opens the store file at path to check its key, for
// `tokenproxy validate`. When no other process holds the file it is
// OpenBolt. When one does (a running tokenproxy), it waits no more than a
// quarter second and then reads a consistent copy of the file instead,
// read-only: the key is checked against the live store's key check record
// and nothing is written. Snapshot reports that case.
func OpenBoltForCheck(path string, ring *Keyring) (*Bolt, error) {
	b, err := openBolt(path, ring, checkLockTimeout)
	if !errors.Is(err, ErrHeld) {
		return b, err
	}
	return openSnapshot(path, ring)
}

// Snapshot reports whether b reads a read-only copy of a store file that
// another process holds (OpenBoltForCheck); its writes fail.
func (b *Bolt) Snapshot() bool { return b.copyPath != "" }

func openSnapshot(path string, ring *Keyring) (*Bolt, error) {
	cp, err := copyConsistent(path)
	if err != nil {
		return nil, fmt.Errorf("reading the consent store %s, which %w: %w", path, ErrHeld, err)
	}
	db, err := bolt.Open(cp, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		_ = os.Remove(cp)
		return nil, fmt.Errorf("reading a copy of the consent store %s: %w", path, err)
	}
	b := &Bolt{db: db, ring: ring, path: path, copyPath: cp}
	if err := b.verifyKey(); err != nil {
		_ = b.Close()
		return nil, err
	}
	return b, nil
}

// verifyKey is checkKey without writing.
func (b *Bolt) verifyKey() error {
	return b.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil || tx.Bucket(bucketConsents) == nil {
			return fmt.Errorf("consent store %s holds no key check record", b.path)
		}
		_, err := b.matchKeys(tx)
		return err
	})
}

// copyConsistent copies the bbolt file at path, which another process may
// be writing, to a temporary file and returns the copy's name.
//
// bbolt writes a transaction's pages first and its meta page last, and a
// page freed by transaction N is reused from transaction N+1 on: so while
// the newest meta page names transaction N, no page it references changes.
// A copy taken between two reads of both meta pages that find them equal
// (the transaction id in them only grows, so equal means no commit landed)
// is a consistent store. A copy a commit overlapped is taken again.
func copyConsistent(path string) (string, error) {
	f, err := os.Open(path) //nolint:gosec // G304: the operator names the store file
	if err != nil {
		return "", err
	}
	defer f.Close()
	n, err := metaSpan(f)
	if err != nil {
		return "", err
	}
	before, after := make([]byte, n), make([]byte, n)
	for range snapshotAttempts {
		if _, err := f.ReadAt(before, 0); err != nil {
			return "", fmt.Errorf("reading the meta pages: %w", err)
		}
		cp, err := copyFile(f)
		if err != nil {
			return "", err
		}
		if _, err := f.ReadAt(after, 0); err != nil {
			_ = os.Remove(cp)
			return "", fmt.Errorf("reading the meta pages: %w", err)
		}
		if bytes.Equal(before, after) {
			return cp, nil
		}
		_ = os.Remove(cp)
	}
	return "", fmt.Errorf("it was written to during each of %d copies", snapshotAttempts)
}

// metaSpan is the length of the two meta pages at the start of a bbolt
// file: twice the page size its first meta page records.
func metaSpan(f *os.File) (int, error) {
	// page header: id u64, flags u16, count u16, overflow u32; then the
	// meta: magic u32, version u32, page size u32 (native byte order).
	var h [28]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return 0, fmt.Errorf("not a bbolt file: %w", err)
	}
	if binary.NativeEndian.Uint32(h[16:]) != boltMagic {
		return 0, errors.New("not a bbolt file (no meta page at its start)")
	}
	ps := int(binary.NativeEndian.Uint32(h[24:]))
	if ps < 512 || ps > 1<<20 {
		return 0, fmt.Errorf("not a bbolt file (page size %d)", ps)
	}
	return 2 * ps, nil
}

// copyFile copies f to a new temporary file and returns its name.
func copyFile(f *os.File) (string, error) {
	tmp, err := os.CreateTemp("", "tokenproxy-consents-*.db")
	if err != nil {
		return "", fmt.Errorf("creating a copy: %w", err)
	}
	_, err = io.Copy(tmp, io.NewSectionReader(f, 0, 1<<62))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return "", fmt.Errorf("copying to %s: %w", tmp.Name(), err)
	}
	return tmp.Name(), nil
}
