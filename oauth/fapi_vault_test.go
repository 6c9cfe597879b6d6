package oauth

import (
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// TestTransitAssertionsVerify: client assertions signed by non-exportable
// Vault Transit keys, PS256 (RSA-PSS, salt = hash length) and ES256 (r||s),
// verify with go-jose, which refuses a PS256 salt other than 32 bytes, and
// carry FAPI 2.0's claims: aud the issuer, a fresh jti each time, a short exp.
func TestTransitAssertionsVerify(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("transit")
	srv.Mount(mount, "transit")
	srv.Write(mount+"/keys/rsa", map[string]any{"type": "rsa-2048", "exportable": false})
	srv.Write(mount+"/keys/ec", map[string]any{"type": "ecdsa-p256", "exportable": false})
	vc := vaultClient(t, srv)
	const issuer = "https://auth.bank.example"
	for _, tc := range []struct {
		key, alg string
		want     jose.SignatureAlgorithm
	}{{"rsa", "PS256", jose.PS256}, {"ec", "ES256", jose.ES256}, {"ec", "", jose.ES256}} {
		t.Run(tc.key+" "+tc.alg, func(t *testing.T) {
			key, err := vc.TransitSigner(t.Context(), vaultsrc.TransitKeyConfig{Mount: mount, Key: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			a := ClientAuth{Method: PrivateKeyJWT, ClientID: "tpp-1", Key: key, Alg: tc.alg, Audience: issuer}
			if err := a.Validate(); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			seen := map[string]bool{}
			for range 3 {
				s, err := a.assertion(a.Audience, now)
				if err != nil {
					t.Fatal(err)
				}
				tok, err := jwt.ParseSigned(s, []jose.SignatureAlgorithm{tc.want})
				if err != nil {
					t.Fatalf("go-jose refuses the header: %v", err)
				}
				var c jwt.Claims
				if err := tok.Claims(key.Public(), &c); err != nil {
					t.Fatalf("go-jose refuses the %s signature: %v", tc.want, err)
				}
				if err := c.ValidateWithLeeway(jwt.Expected{Issuer: "tpp-1", Subject: "tpp-1", AnyAudience: jwt.Audience{issuer}, Time: now}, 0); err != nil {
					t.Fatal(err)
				}
				if c.ID == "" || seen[c.ID] || c.Expiry.Time().Sub(now) > time.Minute {
					t.Fatalf("jti %q (seen %v), exp in %v", c.ID, seen[c.ID], c.Expiry.Time().Sub(now))
				}
				seen[c.ID] = true
			}
		})
	}
	key, err := vc.TransitSigner(t.Context(), vaultsrc.TransitKeyConfig{Mount: mount, Key: "ec"})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&ClientAuth{Method: PrivateKeyJWT, ClientID: "c", Key: key, Alg: "PS256"}).Validate(); err == nil || !strings.Contains(err.Error(), "PS256 needs an RSA key") {
		t.Fatalf("PS256 with a Transit EC key: %v", err)
	}
}
