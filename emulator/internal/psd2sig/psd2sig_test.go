package psd2sig

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/signer"
)

func TestParseSignature(t *testing.T) {
	v := `keyId="SN=6AEB4444FBAAD267,CA=O=PSDNO-FSA-ABCA,L=Trondheim,C=NO", algorithm="rsa-sha256", headers="date x-request-id tpp-redirect-uri psu-id", signature="c2ln"`
	for _, in := range []string{v, signer.EncodeRFC2047(v)} {
		p, err := ParseSignature(in)
		if err != nil {
			t.Fatal(err)
		}
		if p.KeyID != "SN=6AEB4444FBAAD267,CA=O=PSDNO-FSA-ABCA,L=Trondheim,C=NO" || p.Algorithm != "rsa-sha256" ||
			strings.Join(p.Headers, " ") != "date x-request-id tpp-redirect-uri psu-id" || p.Signature != "c2ln" {
			t.Fatalf("%+v", p)
		}
	}
	for in, reason := range map[string]string{
		"":                       ReasonSignatureMissing,
		`keyId="x"`:              ReasonSignatureMalformed,
		`signature="x"`:          ReasonSignatureMalformed,
		`keyId="x",signature="y`: ReasonSignatureMalformed,
		`=?utf-8?B?!!!?=`:        ReasonSignatureMalformed,
		`keyId=x,signature="y"`:  ReasonSignatureMalformed,
	} {
		if _, err := ParseSignature(in); err == nil || AsRejection(err).Reason != reason {
			t.Errorf("ParseSignature(%q) = %v, want %s", in, err, reason)
		}
	}
}

func TestCheckDigest(t *testing.T) {
	h := http.Header{"Digest": {"SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}}
	if err := CheckDigest(h, nil); err != nil {
		t.Fatal(err)
	}
	if err := CheckDigest(h, []byte("x")); AsRejection(err).Reason != ReasonDigestMismatch {
		t.Fatalf("got %v", err)
	}
	if err := CheckDigest(http.Header{"Digest": {"MD5=x"}}, nil); AsRejection(err).Reason != ReasonDigestMismatch {
		t.Fatalf("got %v", err)
	}
}

// FuzzParseSignature: the parser never panics and what it returns is consistent.
func FuzzParseSignature(f *testing.F) {
	f.Add(`keyId="SN=1,CA=O=x",algorithm="rsa-sha256",headers="date digest",signature="c2ln"`)
	f.Add(`=?utf-8?B?a2V5SWQ9IngiLHNpZ25hdHVyZT0ieSI=?=`)
	f.Add(`keyId="",,,signature=""`)
	f.Fuzz(func(t *testing.T, v string) {
		p, err := ParseSignature(v)
		if err != nil {
			return
		}
		if p.KeyID == "" || p.Signature == "" || len(p.Headers) == 0 {
			t.Fatalf("accepted incomplete parameters %+v from %q", p, v)
		}
	})
}
