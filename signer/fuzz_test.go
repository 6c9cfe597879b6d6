package signer

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// FuzzSigningString checks that no header value can add a line to the signing string or the RFC 9421
// signature base (which would let one header pose as another), whatever it contains.
func FuzzSigningString(f *testing.F) {
	f.Add("POST", "/foo?param=value&pet=dog", "x-example", "Example header\r\n    with some whitespace.", "second")
	f.Add("GET", "/", "psu-id", "Jörg", "")
	f.Add("get", "/a%20b", "date", "\n\n", "\r")
	f.Fuzz(func(t *testing.T, method, target, name, v1, v2 string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !validToken(name) || !validToken(method) {
			return
		}
		name = strings.ToLower(name)
		req := &http.Request{Method: method, URL: u, Host: "bank.example", Header: http.Header{}}
		req.Header[http.CanonicalHeaderKey(name)] = []string{v1, v2}
		headers := []string{"(request-target)", name}
		s, err := AppendSigningString(nil, req, nil, headers)
		if err != nil {
			if len(headerValues(req, nil, name, nil, new([1]string))) == 0 {
				return
			}
			t.Fatalf("AppendSigningString: %v", err)
		}
		if n := bytes.Count(s, []byte("\n")); n != len(headers)-1 {
			t.Fatalf("%d line breaks in %q", n, s)
		}
		if !bytes.HasPrefix(s, []byte("(request-target): "+strings.ToLower(method)+" ")) {
			t.Fatalf("bad request-target line in %q", s)
		}
		base, _, err := AppendSignatureBase(nil, req, nil, []string{"@method", name}, func(b []byte) []byte { return append(b, "()"...) })
		if err != nil {
			t.Fatalf("AppendSignatureBase: %v", err)
		}
		if n := bytes.Count(base, []byte("\n")); n != 2 {
			t.Fatalf("%d line breaks in base %q", n, base)
		}
	})
}

// FuzzKeyID feeds arbitrary serials, names and templates to the keyId formatting.
func FuzzKeyID(f *testing.F) {
	seq := pkix.Name{Country: []string{"NO"}, Organization: []string{"PSDNO-FSA-ABCA"}}.ToRDNSequence()
	der, _ := asn1.Marshal(seq)
	f.Add([]byte{0x6a, 0xeb, 0x44}, der, "SN={serial},CA={issuer}")
	f.Add([]byte{0}, []byte{0x30, 0x00}, "{public_key}")
	f.Add([]byte{1}, []byte{0x30, 0x03, 0x31, 0x01, 0x30}, "{")
	f.Fuzz(func(t *testing.T, serial, dn []byte, tmpl string) {
		n := new(big.Int).SetBytes(serial)
		for _, format := range []string{SerialHexUpper, SerialHexLower, SerialDecimal} {
			s, err := FormatSerial(n, format)
			if err != nil {
				t.Fatal(err)
			}
			base := 16
			if format == SerialDecimal {
				base = 10
			}
			back, ok := new(big.Int).SetString(s, base)
			if !ok || back.Cmp(n) != 0 {
				t.Fatalf("serial %x formatted %q (%s) does not parse back", serial, s, format)
			}
		}
		for _, order := range []string{DNOrderRFC4514, DNOrderCertificate} {
			if s, err := FormatDN(dn, order); err == nil && strings.ContainsAny(s, "\r\n\"") && !strings.Contains(s, `\"`) {
				t.Fatalf("DN %q contains an unescaped quote or line break", s)
			}
		}
		if _, err := parseKeyIDTemplate(tmpl); err == nil {
			if _, err := expandKeyID(tmpl, nil, nil, "", ""); err == nil && strings.Contains(tmpl, "{serial}") {
				t.Fatal("{serial} expanded without a certificate")
			}
		}
	})
}

// FuzzInteractionID: whatever the app sends as x-fapi-interaction-id, one canonical-length UUID goes
// upstream, and it is the app's value exactly when that was one.
func FuzzInteractionID(f *testing.F) {
	for _, s := range []string{"", "93bac548-d2de-4546-b106-880a5018460d", "93BAC548-D2DE-4546-B106-880A5018460D",
		"urn:uuid:93bac548-d2de-4546-b106-880a5018460d", "{93bac548-d2de-4546-b106-880a5018460d}",
		"93bac548d2de4546b106880a5018460d", "93bac548-d2de-4546-b106-880a5018460g", "93bac548+d2de-4546-b106-880a5018460d"} {
		f.Add(s)
	}
	const fresh = "0f8fad5b-d9cb-469f-a165-70867728950e"
	f.Fuzz(func(t *testing.T, sent string) {
		h := http.Header{HeaderInteractionID: {sent}}
		setInteractionID(h, func() string { return fresh })
		got := h[HeaderInteractionID]
		if len(got) != 1 {
			t.Fatalf("%d values", len(got))
		}
		id, err := uuid.Parse(got[0])
		if err != nil || len(got[0]) != 36 || id.String() != strings.ToLower(got[0]) {
			t.Fatalf("%q sent upstream is not a hyphenated UUID", got[0])
		}
		if got[0] != sent && got[0] != fresh {
			t.Fatalf("%q became %q", sent, got[0])
		}
		if got[0] == fresh && sent != fresh && validInteractionID(sent) {
			t.Fatalf("a valid %q was replaced", sent)
		}
	})
}
