package callercert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// issueClient issues a client certificate from ca with subject and URI SANs.
func issueClient(t testing.TB, ca *pki.CA, subject pkix.Name, uris ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate(), key.Public(), ca.Signer())
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestMapperCaller(t *testing.T) {
	ca, err := pki.NewCA("Callers CA")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMapper([]Caller{
		{Name: "payments", Certificate: Match{Subject: "payments"}},
		{Name: "ledger", Certificate: Match{Subject: "cn=ledger, ou=Apps, O=Example\\, Inc., c=DK"}},
		{Name: "billing", Certificate: Match{SPIFFEID: "spiffe://prod.example/ns/billing/sa/api"}},
		{Name: "by-password-only"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ledgerName := pkix.Name{CommonName: "ledger", OrganizationalUnit: []string{"Apps"}, Organization: []string{"Example, Inc."}, Country: []string{"DK"}}
	tests := []struct {
		name    string
		subject pkix.Name
		uris    []string
		want    string // "" means UnknownCertificateError
	}{
		{"common name", pkix.Name{CommonName: "payments", Organization: []string{"Anything"}}, nil, "payments"},
		{"full DN", ledgerName, nil, "ledger"},
		{"DN with another OU", pkix.Name{CommonName: "ledger", OrganizationalUnit: []string{"Ops"}, Organization: []string{"Example, Inc."}, Country: []string{"DK"}}, nil, ""},
		{"CN of a DN-only caller", pkix.Name{CommonName: "ledger"}, nil, ""},
		{"SPIFFE ID", pkix.Name{}, []string{"spiffe://prod.example/ns/billing/sa/api"}, "billing"},
		{"SPIFFE ID of nobody, CN of a caller", pkix.Name{CommonName: "payments"}, []string{"spiffe://prod.example/ns/other"}, ""},
		{"two URI SANs", pkix.Name{}, []string{"spiffe://prod.example/ns/billing/sa/api", "spiffe://prod.example/x"}, ""},
		{"unknown", pkix.Name{CommonName: "stranger"}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := issueClient(t, ca, tc.subject, tc.uris...)
			got, err := m.Caller(c.Leaf)
			if tc.want == "" {
				var ue *UnknownCertificateError
				if !errors.As(err, &ue) {
					t.Fatalf("Caller = %q, %v; want an UnknownCertificateError", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Caller = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestNewMapperErrors(t *testing.T) {
	tests := []struct {
		name    string
		callers []Caller
		want    string
	}{
		{"both fields", []Caller{{Name: "a", Certificate: Match{Subject: "a", SPIFFEID: "spiffe://x/a"}}}, "callers[0].certificate: set subject or spiffe_id"},
		{"bad SPIFFE ID", []Caller{{Name: "a", Certificate: Match{SPIFFEID: "https://x/a"}}}, "callers[0].certificate.spiffe_id"},
		{"bad DN", []Caller{{Name: "a", Certificate: Match{Subject: "CN=a,XX=b"}}}, "callers[0].certificate.subject: distinguished name"},
		{"duplicate CN", []Caller{{Name: "a", Certificate: Match{Subject: "x"}}, {Name: "b", Certificate: Match{Subject: "x"}}}, "callers[1].certificate.subject: callers \"a\" and \"b\""},
		{"duplicate DN spelled differently", []Caller{{Name: "a", Certificate: Match{Subject: "CN=x,O=y"}}, {Name: "b", Certificate: Match{Subject: "commonName = x , o=y"}}}, "same certificate identity"},
		{"duplicate SPIFFE ID", []Caller{{Name: "a", Certificate: Match{SPIFFEID: "spiffe://td/a"}}, {Name: "b", Certificate: Match{SPIFFEID: "spiffe://td/a"}}}, "callers[1].certificate.spiffe_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewMapper(tc.callers)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewMapper: %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseSPIFFEID(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"spiffe://prod.example", "spiffe://prod.example"},
		{"spiffe://prod.example/ns/billing/sa/api", "spiffe://prod.example/ns/billing/sa/api"},
		{"SPIFFE://prod.example/a", "spiffe://prod.example/a"},
		{"spiffe://Prod.example/a", ""},
		{"spiffe://prod.example/", ""},
		{"spiffe://prod.example//a", ""},
		{"spiffe://prod.example/a/../b", ""},
		{"spiffe://prod.example:8443/a", ""},
		{"spiffe://user@prod.example/a", ""},
		{"spiffe://prod.example/a?x=1", ""},
		{"spiffe://prod.example/a#f", ""},
		{"spiffe:///a", ""},
		{"https://prod.example/a", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			id, err := ParseSPIFFEID(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseSPIFFEID(%q) = %v, want an error", tc.in, id)
				}
				return
			}
			if err != nil || id.String() != tc.want {
				t.Fatalf("ParseSPIFFEID(%q) = %v, %v; want %s", tc.in, id, err, tc.want)
			}
		})
	}
}

func TestParseDN(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"CN=payments,O=Example,C=DK", "CN=payments,O=Example,C=DK"},
		{" cn = payments ; o=Example , c=DK", "CN=payments,O=Example,C=DK"},
		{"commonName=a,organizationName=b", "CN=a,O=b"},
		{`CN=Example\, Inc.,C=DK`, `CN=Example\, Inc.,C=DK`},
		{`CN=Example\2C Inc.`, `CN=Example\, Inc.`},
		{"OU=b+CN=a,O=x", "CN=a+OU=b,O=x"},
		{"2.5.4.3=a", "CN=a"},
		{"OID.2.5.4.97=PSDDK-FSA-1234", "ORGANIZATIONIDENTIFIER=PSDDK-FSA-1234"},
		{"1.2.3.4=x", "1.2.3.4=x"},
		{"XX=a", ""},
		{"CN", ""},
		{"CN=a,", ""},
		{`CN=a\`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDN(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("ParseDN(%q) = %q, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestCanonicalSubjectMatchesParseDN(t *testing.T) {
	ca, _ := pki.NewCA("Callers CA")
	c := issueClient(t, ca, pkix.Name{CommonName: "a+b", Organization: []string{`Ex"ample`}, Country: []string{"DK"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{2, 5, 4, 97}, Value: "PSDDK-FSA-1"}}})
	got, err := CanonicalSubject(c.Leaf.RawSubject)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParseDN(`ORGANIZATIONIDENTIFIER=PSDDK-FSA-1,CN=a\+b,O=Ex\"ample,C=DK`)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("certificate subject %q, configured %q", got, want)
	}
}
