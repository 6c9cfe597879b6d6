package keyset

import (
	"bytes"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, Size), bytes.Repeat([]byte{2}, Size)
	for _, tc := range []struct {
		name string
		keys []Key
		want string
	}{
		{"none", nil, "at least one key"},
		{"bad id", []Key{{ID: "a b", Key: a}}, "letters, digits"},
		{"twice", []Key{{ID: "a", Key: a}, {ID: "a", Key: b}}, "listed twice"},
		{"short", []Key{{ID: "a", Key: a[:16]}}, "must be 32"},
	} {
		if _, err := New(tc.keys...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
	s, err := New(Key{ID: "b", Key: b}, Key{ID: "a", Key: a})
	if err != nil || s.Newest() != "b" || !s.Has("a") || s.Has("c") || s.AEAD("a") == nil || s.AEAD("c") != nil {
		t.Fatalf("%v %v", s, err)
	}
}
