package callercert

import "testing"

func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{"spiffe://td", "spiffe://td/a/b", "spiffe://td/", "spiffe://TD/a", "spiffe://td/a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSPIFFEID(s)
		if err != nil {
			return
		}
		again, err := ParseSPIFFEID(id.String())
		if err != nil || again != id {
			t.Fatalf("canonical form %q of %q does not parse back: %v %v", id.String(), s, again, err)
		}
	})
}

func FuzzParseDN(f *testing.F) {
	for _, s := range []string{"CN=a,O=b", `CN=a\,b`, "OU=b+CN=a", `CN=\41`, "1.2.3=x", "cn = a ; c=DK"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dn, err := ParseDN(s)
		if err != nil {
			return
		}
		again, err := ParseDN(dn)
		if err != nil || again != dn {
			t.Fatalf("canonical form %q of %q is not a fixed point: %q %v", dn, s, again, err)
		}
	})
}
