package cli

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"strings"
	"testing"
)

// rdnOrder decodes a DER subject and lists its attributes as "OID=value" in encoded order.
func rdnOrder(t testing.TB, der []byte) []string {
	t.Helper()
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &seq); err != nil || len(rest) != 0 {
		t.Fatalf("subject DER does not decode: %v (%d bytes left)", err, len(rest))
	}
	var out []string
	for _, rdn := range seq {
		for _, a := range rdn {
			out = append(out, a.Type.String()+"="+a.Value.(string))
		}
	}
	return out
}

func TestParseSubjectKeepsOrder(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		want    []string
		cn      string
	}{
		{"psd2 order", `CN=TPP QSealC,O=Acme\, Ltd,C=DK,organizationIdentifier=PSDDK-DFSA-12345678`,
			[]string{"2.5.4.3=TPP QSealC", "2.5.4.10=Acme, Ltd", "2.5.4.6=DK", "2.5.4.97=PSDDK-DFSA-12345678"}, "TPP QSealC"},
		{"country first", "C=NO, ST=Oslo, L=Oslo, O=Example TPP AS, OU=Payments, CN=tpp.example",
			[]string{"2.5.4.6=NO", "2.5.4.8=Oslo", "2.5.4.7=Oslo", "2.5.4.10=Example TPP AS", "2.5.4.11=Payments", "2.5.4.3=tpp.example"}, "tpp.example"},
		{"identifier between", "2.5.4.97=PSDNO-FSA-1,CN=x,O=a,O=b",
			[]string{"2.5.4.97=PSDNO-FSA-1", "2.5.4.3=x", "2.5.4.10=a", "2.5.4.10=b"}, "x"},
		{"escaped backslash", `CN=a\\b`, []string{`2.5.4.3=a\b`}, `a\b`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, der, err := parseSubject(tc.subject)
			if err != nil {
				t.Fatal(err)
			}
			if got := rdnOrder(t, der); !slices.Equal(got, tc.want) {
				t.Fatalf("RDNs %q, want %q", got, tc.want)
			}
			if name.CommonName != tc.cn {
				t.Fatalf("CommonName %q, want %q", name.CommonName, tc.cn)
			}
		})
	}
}

func TestParseSubjectErrors(t *testing.T) {
	tests := []struct{ subject, want string }{
		{"", "--subject is required"},
		{"CN", "is not KEY=VALUE"},
		{"CN=", "is not KEY=VALUE"},
		{"E=a@b", `unknown attribute "E"`},
	}
	for _, tc := range tests {
		t.Run(tc.subject, func(t *testing.T) {
			if _, _, err := parseSubject(tc.subject); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzParseSubject: any accepted subject encodes to DER that decodes to as many
// attributes as the input has parts.
func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{`CN=TPP QSealC,O=Acme\, Ltd,C=DK,organizationIdentifier=PSDDK-DFSA-12345678`, "C=NO,CN=x", `CN=a\\`, "CN=,", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, der, err := parseSubject(s)
		if err != nil {
			return
		}
		if got, want := len(rdnOrder(t, der)), len(splitSubject(s)); got != want {
			t.Fatalf("%q: %d attributes encoded, %d given", s, got, want)
		}
	})
}
