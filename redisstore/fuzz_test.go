package redisstore

import (
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// FuzzOpenToken: whatever Redis returns, opening it never panics and never
// yields a token unless it was sealed under this key and AAD.
func FuzzOpenToken(f *testing.F) {
	s, err := newSealer(Key{ID: DefaultKeyID, Key: testKey})
	if err != nil {
		f.Fatal(err)
	}
	aad := tokenAAD("bc", "alice", 1)
	good, err := s.sealToken(&tokencache.Token{Value: "v", Header: "Bearer v", Expiry: time.Unix(2e9, 0)}, aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{sealVersion})
	f.Add(append([]byte{sealVersion}, make([]byte, 40)...))
	f.Fuzz(func(t *testing.T, blob []byte) {
		tok, err := s.openToken(blob, aad)
		if err == nil && tok == nil {
			t.Fatal("no error and no token")
		}
		// Only a value sealed by this test (the seed) can open.
		if err == nil && (tok.Value != "v" || tok.Expiry.Unix() != 2e9) {
			t.Fatalf("opened a value that was not sealed here: %x", blob)
		}
	})
}
