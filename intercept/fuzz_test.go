package intercept

import (
	"net"
	"testing"
)

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"bank.example", "Bank.Example.:443", "[::1]:443", "127.0.0.1", "*.x", "a..b", "", "x_y-z.example:8443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := NormalizeHost(s)
		if err != nil {
			return
		}
		again, err := NormalizeHost(h)
		if err != nil || again != h {
			t.Fatalf("NormalizeHost(%q) = %q is not a fixed point: %q %v", s, h, again, err)
		}
		if net.ParseIP(h) == nil && !validDNSName(h) {
			t.Fatalf("NormalizeHost(%q) = %q is neither an IP nor a DNS name", s, h)
		}
	})
}
