package tokenclient

import (
	"strings"
	"testing"
	"time"
)

func TestParseToken(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		body    string
		ttl     time.Duration
		typ     string
		wantErr string
	}{
		{"string expires_in (Banking Circle)", `{"access_token":"abc","expires_in":"300","token_type":"Bearer"}`, 300 * time.Second, "Bearer", ""},
		{"number expires_in", `{"access_token":"abc","expires_in":3600,"token_type":"bearer"}`, time.Hour, "Bearer", ""},
		{"fractional", `{"access_token":"abc","expires_in":1.5}`, 1500 * time.Millisecond, "Bearer", ""},
		{"absent uses default", `{"access_token":"abc"}`, 42 * time.Second, "Bearer", ""},
		{"null uses default", `{"access_token":"abc","expires_in":null}`, 42 * time.Second, "Bearer", ""},
		{"other type kept", `{"access_token":"abc","expires_in":"5","token_type":"DPoP"}`, 5 * time.Second, "DPoP", ""},
		{"spaces in string", `{"access_token":"abc","expires_in":" 60 "}`, time.Minute, "Bearer", ""},
		{"no token", `{"expires_in":"300"}`, 0, "", "no access_token"},
		{"bad expires_in", `{"access_token":"abc","expires_in":"soon"}`, 0, "", "expires_in"},
		{"negative expires_in", `{"access_token":"abc","expires_in":-1}`, 0, "", "expires_in"},
		{"object expires_in", `{"access_token":"abc","expires_in":{}}`, 0, "", "expires_in"},
		{"not json", `<html>`, 0, "", "not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseToken([]byte(tc.body), now, 42*time.Second)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tok.Expiry.Sub(now); got != tc.ttl {
				t.Fatalf("ttl %v, want %v", got, tc.ttl)
			}
			if tok.Type != tc.typ || tok.Header != tc.typ+" abc" {
				t.Fatalf("type %q header %q", tok.Type, tok.Header)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"30", 30 * time.Second, true},
		{" 0 ", 0, true},
		{"-5", 0, false},
		{"99999999", maxRetryAfter, true},
		{"Thu, 01 Jan 2026 00:01:00 GMT", time.Minute, true},
		{"Wed, 31 Dec 2025 23:00:00 GMT", 0, true},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			d, ok := ParseRetryAfter(tc.in, now)
			if d != tc.want || ok != tc.ok {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, d, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"abc","expires_in":"300","token_type":"Bearer"}`,
		`{"access_token":"abc","expires_in":3600}`,
		`{"access_token":"","expires_in":"1e309"}`,
		`{"access_token":"x","expires_in":"NaN"}`,
		`[]`, `null`, `{"expires_in":"\u0030"}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Unix(0, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := ParseToken(body, now, time.Minute)
		if err != nil {
			if strings.Contains(err.Error(), string(body)) && len(body) > 8 {
				t.Fatalf("error echoes the body: %v", err)
			}
			return
		}
		if tok.Value == "" || tok.Expiry.Before(now) {
			t.Fatalf("accepted an unusable token: %+v", *tok)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"30", "Thu, 01 Jan 2026 00:01:00 GMT", "-1", "9999999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, _ := ParseRetryAfter(s, time.Unix(1e9, 0))
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v out of range", s, d)
		}
	})
}
