package signer

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFormatSerial(t *testing.T) {
	n, _ := new(big.Int).SetString("06AEB4444FBAAD267", 16)
	for _, tc := range []struct{ format, want string }{
		{"", "6AEB4444FBAAD267"}, {SerialHexUpper, "6AEB4444FBAAD267"},
		{SerialHexLower, "6aeb4444fbaad267"}, {SerialDecimal, n.String()},
	} {
		if got, err := FormatSerial(n, tc.format); err != nil || got != tc.want {
			t.Errorf("FormatSerial(%q) = %q, %v; want %q", tc.format, got, err, tc.want)
		}
	}
	if _, err := FormatSerial(n, "octal"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestFormatDN(t *testing.T) {
	name := pkix.Name{Country: []string{"NO"}, Locality: []string{"Trondheim"}, Organization: []string{"PSDNO-FSA-ABCA"}}
	seq := name.ToRDNSequence() // C, L, O as most CAs encode them
	seq = append(seq, []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "Bank, \"Nord\" + Sør"}})
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ order, want string }{
		{"", `CN=Bank\, \"Nord\" \+ Sør,O=PSDNO-FSA-ABCA,L=Trondheim,C=NO`},
		{DNOrderRFC4514, `CN=Bank\, \"Nord\" \+ Sør,O=PSDNO-FSA-ABCA,L=Trondheim,C=NO`},
		{DNOrderCertificate, `C=NO,L=Trondheim,O=PSDNO-FSA-ABCA,CN=Bank\, \"Nord\" \+ Sør`},
	} {
		if got, err := FormatDN(der, tc.order); err != nil || got != tc.want {
			t.Errorf("FormatDN(%q) = %q, %v\nwant %q", tc.order, got, err, tc.want)
		}
	}
	if _, err := FormatDN([]byte{0x30, 0x03, 0x01}, ""); err == nil {
		t.Error("malformed DN accepted")
	}
}

func TestRequestTargetEscaped(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "https://bank.example/v1/a%20b/%C3%A6?q=1%2F2&x=%20", nil)
	got, err := AppendSigningString(nil, r, nil, []string{"(request-target)"})
	if err != nil || string(got) != "(request-target): get /v1/a%20b/%C3%A6?q=1%2F2&x=%20" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestSignHeaders(t *testing.T) {
	p := getPKI(t)
	at := time.Now().Truncate(time.Second).In(time.FixedZone("CET", 3600))
	newS := func(o Options) *signer {
		s, err := newSigner(o, StaticKey{p.rsa}, func() time.Time { return at })
		if err != nil {
			t.Fatal(err)
		}
		s.newID = func() string { return "4eba4445-1a4b-47b8-bdd5-4e56ef026b19" }
		return s
	}

	t.Run("defaults added when absent", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://bank.example/v1/accounts", nil)
		if err := newS(Options{Profile: ProfileBerlinGroup}).Sign(r, nil); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"Date":         at.UTC().Format("Mon, 02 Jan 2006 15:04:05") + " GMT",
			"X-Request-Id": "4eba4445-1a4b-47b8-bdd5-4e56ef026b19",
			"Digest":       "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if sig := r.Header.Get("Signature"); !strings.Contains(sig, `,algorithm="rsa-sha256",headers="digest x-request-id date",signature="`) {
			t.Errorf("Signature = %s", sig)
		}
	})
	t.Run("app values kept", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://bank.example/v1/accounts", nil)
		r.Header.Set("Date", "Tue, 07 Jun 2014 20:51:35 GMT")
		r.Header.Set("X-Request-ID", "app-id")
		if err := newS(Options{Profile: ProfileBerlinGroup}).Sign(r, nil); err != nil {
			t.Fatal(err)
		}
		if r.Header.Get("Date") != "Tue, 07 Jun 2014 20:51:35 GMT" || r.Header.Get("X-Request-ID") != "app-id" {
			t.Errorf("app headers replaced: %v", r.Header)
		}
	})
	t.Run("SHA-512 and Content-Digest", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://bank.example/v1/accounts", nil)
		if err := newS(Options{Profile: ProfileRFC9421, KeyID: "k", Digest: "sha-512"}).Sign(r, nil); err != nil {
			t.Fatal(err)
		}
		const empty512 = "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
		if r.Header.Get("Digest") != "SHA-512="+empty512 || r.Header.Get("Content-Digest") != "sha-512=:"+empty512+":" {
			t.Errorf("digests: %q %q", r.Header.Get("Digest"), r.Header.Get("Content-Digest"))
		}
		if got := r.Header.Get("Signature-Input"); got != `sig1=("@method" "@authority" "@path" "@query" "content-digest" "date" "x-request-id");created=`+
			strconv.FormatInt(at.Unix(), 10)+`;keyid="k";alg="rsa-pss-sha512"` {
			t.Errorf("Signature-Input = %s", got)
		}
	})
	t.Run("stet covers psu headers in the sandbox order and content-type with a body", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodPut, "https://bank.example/stet/psd2/v1/consents", strings.NewReader("{}"))
		for _, h := range []string{"PSU-Accept-Language", "PSU-Custom", "PSU-IP-Address", "PSU-User-Agent", "Content-Type"} {
			r.Header.Set(h, "x")
		}
		if err := newS(Options{Profile: ProfileSTET, KeyID: "k"}).Sign(r, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		want := `headers="(request-target) digest x-request-id date psu-ip-address psu-user-agent psu-accept-language psu-custom content-type"`
		if sig := r.Header.Get("Signature"); !strings.Contains(sig, want) {
			t.Errorf("Signature = %s\nwant %s", sig, want)
		}
	})
	t.Run("missing covered header", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://bank.example/", nil)
		err := newS(Options{Profile: ProfileCustom, KeyID: "k", Headers: []string{"date", "x-consent-id"}}).Sign(r, nil)
		if err == nil || !strings.Contains(err.Error(), `"x-consent-id" is covered by the signature but the request has no such header`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		s := newS(Options{Profile: ProfileBerlinGroup})
		done := make(chan error)
		for i := 0; i < 8; i++ {
			go func() {
				r := httptest.NewRequest(http.MethodPost, "https://bank.example/v1/payments", nil)
				r.Header.Set("PSU-ID", "p")
				done <- s.Sign(r, []byte(`{"a":1}`))
			}()
		}
		for i := 0; i < 8; i++ {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
}

func TestRFC2047(t *testing.T) {
	for _, v := range []string{`keyId="SN=1,CA=O=Bank Ø"`, "plain"} {
		got, err := DecodeRFC2047(EncodeRFC2047(v))
		if err != nil || got != v {
			t.Errorf("round trip %q: %q, %v", v, got, err)
		}
	}
	if got, _ := DecodeRFC2047("plain"); got != "plain" {
		t.Error("plain value changed")
	}
	if got, err := DecodeRFC2047("=?ISO-8859-1?B?2A==?="); err != nil || got != "Ø" {
		t.Errorf("latin-1: %q %v", got, err)
	}
	if got, err := DecodeRFC2047("=?="); err != nil || got != "=?=" { // found by FuzzParseSignature
		t.Errorf("short value: %q %v", got, err)
	}
	if _, err := DecodeRFC2047("=?utf-8?Q?x?="); err == nil {
		t.Error("Q encoding accepted")
	}
}
