package vaultsrc

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/tokenproxy/tokenproxy/certs"
)

// The health of a certificate source stays failing while its current
// version is the one it refused, also on the polls that answer "unchanged".
func TestRefusalHealth(t *testing.T) {
	refused := certs.Refuse(errors.New("wrong passcode"))
	outage := &UnavailableError{Op: "reading", Err: errors.New("connection refused")}
	good := &tls.Certificate{}
	var r refusal
	steps := []struct {
		name    string
		cert    *tls.Certificate
		version string
		err     error
		want    error
	}{
		{"good version", good, "1", nil, nil},
		{"unchanged", nil, "1", nil, nil},
		{"refused version", nil, "2", refused, refused},
		{"refused version polled again", nil, "2", nil, refused},
		{"outage", nil, "2", outage, outage},
		{"refused version after the outage", nil, "2", nil, refused},
		{"fixed version", good, "3", nil, nil},
		{"unchanged after the fix", nil, "3", nil, nil},
		{"old version given, unchanged", nil, "1", nil, nil},
	}
	for _, s := range steps {
		if got := r.healthErr(s.cert, s.version, s.err); !errors.Is(got, s.want) || (s.want == nil) != (got == nil) {
			t.Fatalf("%s: health error %v, want %v", s.name, got, s.want)
		}
	}
}
