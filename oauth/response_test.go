package oauth

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/tokenclient"
)

func TestParseResponse(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name          string
		body          string
		wantErr       bool
		ttl           time.Duration
		refresh       string
		scopes        int
		refreshExpiry time.Duration
	}{
		{name: "STET answer", body: `{"access_token":"a","token_type":"Bearer","expires_in":3600,"scope":"aisp offline_access","refresh_token":"r"}`,
			ttl: time.Hour, refresh: "r", scopes: 2},
		{name: "expires_in as string", body: `{"access_token":"a","expires_in":"300"}`, ttl: 5 * time.Minute},
		{name: "no expires_in", body: `{"access_token":"a"}`, ttl: 5 * time.Minute},
		{name: "refresh_expires_in", body: `{"access_token":"a","expires_in":60,"refresh_token":"r","refresh_expires_in":"7776000"}`,
			ttl: time.Minute, refresh: "r", refreshExpiry: 90 * 24 * time.Hour},
		{name: "missing access_token", body: `{"refresh_token":"r"}`, wantErr: true},
		{name: "not JSON", body: `<html>oops</html>`, wantErr: true},
		{name: "bad expires_in", body: `{"access_token":"a","expires_in":"soon"}`, wantErr: true},
		{name: "bad refresh_expires_in", body: `{"access_token":"a","refresh_expires_in":{}}`, wantErr: true},
		{name: "huge body", body: `{"access_token":"` + strings.Repeat("x", tokenclient.MaxBody) + `"}`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseResponse([]byte(tc.body), now, 5*time.Minute)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				if strings.Contains(err.Error(), "oops") || len(err.Error()) > 200 {
					t.Fatalf("error echoes the body: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Token.Expiry.Sub(now) != tc.ttl || r.RefreshToken.Reveal() != tc.refresh || len(r.Scopes) != tc.scopes {
				t.Fatalf("got ttl %v refresh %v scopes %v", r.Token.Expiry.Sub(now), r.RefreshToken.Reveal() == tc.refresh, r.Scopes)
			}
			if tc.refreshExpiry != 0 && r.RefreshExpiry.Sub(now) != tc.refreshExpiry {
				t.Fatalf("refresh expiry %v", r.RefreshExpiry.Sub(now))
			}
		})
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","token_type":"Bearer","expires_in":3600,"scope":"aisp offline_access","refresh_token":"r"}`,
		`{"access_token":"a","expires_in":"300"}`, `{"access_token":"a","refresh_expires_in":1e9}`,
		`{"access_token":"a","refresh_token_expires_in":"-1"}`, `{}`, `null`, `[]`, `not json`, ``,
	} {
		f.Add([]byte(s))
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseResponse(body, now, time.Minute)
		if err != nil {
			if len(body) > 8 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error echoes the body")
			}
			return
		}
		if r.Token.Value == "" || r.Token.Expiry.Before(now) || (!r.RefreshExpiry.IsZero() && !r.RefreshExpiry.After(now)) {
			t.Fatalf("accepted a response with an empty token or an expiry in the past")
		}
	})
}
