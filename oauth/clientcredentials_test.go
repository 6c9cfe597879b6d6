package oauth

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
	"github.com/tokenproxy/tokenproxy/tokencache"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

func TestClientCredentialsEachMethod(t *testing.T) {
	e := newEnv(t, false)
	for _, tc := range []struct {
		name string
		auth ClientAuth
	}{
		{"client_secret_basic", ClientAuth{Method: ClientSecretBasic, ClientID: "basic-app", Secret: secret.Static(secret.New("basic s3cret:&"), "test")}},
		{"client_secret_post", ClientAuth{Method: ClientSecretPost, ClientID: "post-app", Secret: secret.Static(secret.New("post-s3cret"), "test")}},
		{"tls_client_auth", e.stetAuth()},
		{"private_key_jwt ES256", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-ec-app", Key: bankPKI.ec, KeyID: "k1"}},
		{"private_key_jwt RS256", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-rsa-app", Key: bankPKI.rsa}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewClientCredentials(e.endpoint("cc", tc.auth), []string{"payments"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Fetch(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := e.h.CustomerOf(tok.Header); !ok || !tok.Expiry.Equal(e.clk.Now().Add(time.Hour)) {
				t.Fatalf("the token is not one the bank issued, or expiry %v is wrong", tok.Expiry)
			}
			if src.Host() != strings.TrimPrefix(e.srv.URL, "https://") {
				t.Fatalf("Host() = %q", src.Host())
			}
		})
	}
}

func TestClientCredentialsRefused(t *testing.T) {
	e := newEnv(t, false)
	wrongSecret := secret.Static(secret.New("not-the-secret-xyz"), "env CC_SECRET")
	for _, tc := range []struct {
		name string
		auth ClientAuth
	}{
		{"wrong basic secret", ClientAuth{Method: ClientSecretBasic, ClientID: "basic-app", Secret: wrongSecret}},
		{"wrong post secret", ClientAuth{Method: ClientSecretPost, ClientID: "post-app", Secret: wrongSecret}},
		{"method not registered", ClientAuth{Method: ClientSecretPost, ClientID: "basic-app", Secret: wrongSecret}},
		{"certificate is not the client's", ClientAuth{Method: TLSClientAuth, ClientID: "basic-app"}},
		{"JWT signed by another key", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-ec-app", Key: crypto.Signer(bankPKI.rsa)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewClientCredentials(e.endpoint("acme-cc", tc.auth), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = src.Fetch(context.Background(), "")
			var fe *tokencache.FetchError
			if !errors.As(err, &fe) || fe.Status != 401 {
				t.Fatalf("err = %v, want a 401 FetchError", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "route acme-cc") || !strings.Contains(msg, "invalid_client") || strings.Contains(msg, "not-the-secret-xyz") {
				t.Fatalf("error %q must name the route and the refusal, never the secret", msg)
			}
		})
	}
}

func TestClientCredentials429(t *testing.T) {
	e := newEnv(t, false)
	src, err := NewClientCredentials(e.endpoint("cc", e.stetAuth()), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.h.Throttle(1)
	_, err = src.Fetch(context.Background(), "")
	var fe *tokencache.FetchError
	if !errors.As(err, &fe) || fe.Status != 429 || RetryAfterOf(err) != 7*time.Second || fe.RetryAfter != 7*time.Second {
		t.Fatalf("err = %v (retry after %v), want FetchError 429 with Retry-After 7s", err, RetryAfterOf(err))
	}
}

func TestClientAuthValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		auth ClientAuth
	}{
		{"no client id", ClientAuth{Method: TLSClientAuth}},
		{"basic without secret", ClientAuth{Method: ClientSecretBasic, ClientID: "x"}},
		{"jwt without key", ClientAuth{Method: PrivateKeyJWT, ClientID: "x"}},
		{"unknown method", ClientAuth{Method: "magic", ClientID: "x"}},
	} {
		if err := tc.auth.Validate(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// TestPrivateKeyJWTWithVaultTransit signs the client assertion with a
// non-exportable Vault Transit key.
func TestPrivateKeyJWTWithVaultTransit(t *testing.T) {
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("transit")
	srv.Mount(mount, "transit")
	srv.Write(mount+"/keys/jwt", map[string]any{"type": "ecdsa-p256", "exportable": false})
	t.Setenv("OAUTH_TEST_VAULT_TOKEN", srv.Token)
	vc, err := vaultsrc.New(t.Context(), vaultsrc.Config{Address: srv.Addr,
		Auth: vaultsrc.AuthConfig{Method: "token", Token: &vaultsrc.TokenAuth{Env: "OAUTH_TEST_VAULT_TOKEN"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	key, err := vc.TransitSigner(t.Context(), vaultsrc.TransitKeyConfig{Mount: mount, Key: "jwt"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, false, map[string]stet.Client{"jwt-transit-app": {Method: "private_key_jwt", Key: key.Public()}})
	src, err := NewClientCredentials(e.endpoint("cc", ClientAuth{Method: PrivateKeyJWT, ClientID: "jwt-transit-app", Key: key}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Fetch(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.h.CustomerOf(tok.Header); !ok {
		t.Fatal("the token is not valid at the bank")
	}
}
