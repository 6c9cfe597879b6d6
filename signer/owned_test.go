package signer

import (
	"reflect"
	"testing"
)

func TestOwnedHeaders(t *testing.T) {
	base := []string{"Digest", "Content-Digest", "Signature", "Signature-Input"}
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"berlin-group sends its certificate", Options{Profile: ProfileBerlinGroup}, append(base[:4:4], DefaultBerlinGroupCertificateHeader)},
		{"berlin-group without certificate", Options{Profile: ProfileBerlinGroup, CertificateHeader: "none"}, base},
		{"stet", Options{Profile: ProfileSTET, KeyID: "{public_key}"}, base},
		{"custom certificate header", Options{Profile: ProfileCustom, KeyID: "k", Headers: []string{"date"}, CertificateHeader: "X-Cert"}, append(base[:4:4], "X-Cert")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.opts.OwnedHeaders()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("OwnedHeaders = %q; want %q", got, tc.want)
			}
		})
	}
	if _, err := (&Options{Profile: "nope"}).OwnedHeaders(); err == nil {
		t.Fatal("an unknown profile has no owned headers")
	}
}
