package assemble

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth"
)

// TestFAPIAuth: the client assertion's algorithm defaults by key and
// profile (PS256 for RSA on fapi2, RS256 off it, ES256 for P-256), and on
// fapi2 routes its audience is the issuer identifier.
func TestFAPIAuth(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const iss = "https://auth.bank.example"
	for _, tc := range []struct {
		name, profile, alg string
		key                oauth.ClientAuth
		wantAlg, wantAud   string
	}{
		{"rsa on fapi2", config.ProfileFAPI2, "", oauth.ClientAuth{Key: rk}, "PS256", iss},
		{"rsa off fapi", "", "", oauth.ClientAuth{Key: rk}, "RS256", ""},
		{"rsa PS256 off fapi", "", "PS256", oauth.ClientAuth{Key: rk}, "PS256", ""},
		{"ec on fapi2", config.ProfileFAPI2, "", oauth.ClientAuth{Key: ec}, "ES256", iss},
		{"tls_client_auth on fapi2", config.ProfileFAPI2, "", oauth.ClientAuth{}, "", iss},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := &config.Token{}
			tok.Profile, tok.SigningAlg, tok.Issuer = tc.profile, tc.alg, iss
			a := tc.key
			if err := fapiAuth("routes[0](x).token", tok, &a); err != nil {
				t.Fatal(err)
			}
			if a.Alg != tc.wantAlg || a.Audience != tc.wantAud {
				t.Fatalf("alg %q aud %q, want %q %q", a.Alg, a.Audience, tc.wantAlg, tc.wantAud)
			}
		})
	}
	tok := &config.Token{}
	tok.SigningAlg = "ES256"
	a := oauth.ClientAuth{Key: rk}
	if err := fapiAuth("routes[0](x).token", tok, &a); err == nil {
		t.Fatal("ES256 with an RSA key was accepted")
	}
}
