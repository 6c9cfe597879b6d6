package vaultsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/secret"
)

// authenticator obtains a Vault token. login returns a Secret whose Auth
// holds the token, its TTL and whether it is renewable. lc is a client with no
// token set, so a stale token never rides along on a login.
type authenticator interface {
	login(ctx context.Context, lc *api.Client) (*api.Secret, error)
}

func newAuthenticator(cfg Config) (authenticator, error) {
	switch cfg.Auth.Method {
	case MethodToken:
		return tokenAuth{cfg: *cfg.Auth.Token}, nil
	case MethodAppRole:
		a := cfg.Auth.AppRole
		roleID, err := a.RoleID.Open(nil)
		if err != nil {
			return nil, fmt.Errorf("vault.auth.approle.role_id: %w", err)
		}
		secretID, err := a.SecretID.Open(nil)
		if err != nil {
			return nil, fmt.Errorf("vault.auth.approle.secret_id: %w", err)
		}
		return appRoleAuth{mount: a.Mount, roleID: roleID, secretID: secretID}, nil
	case MethodKubernetes:
		k := cfg.Auth.Kubernetes
		return kubernetesAuth{mount: k.Mount, role: k.Role, jwtFile: k.JWTFile}, nil
	}
	return nil, fmt.Errorf("vault.auth.method: %q is not supported", cfg.Auth.Method)
}

// tokenAuth uses a given token; "login" reads it and looks it up to learn its TTL.
type tokenAuth struct{ cfg TokenAuth }

func (a tokenAuth) read() (string, error) {
	if a.cfg.Env != "" {
		v := strings.TrimSpace(os.Getenv(a.cfg.Env))
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", a.cfg.Env)
		}
		return v, nil
	}
	b, err := os.ReadFile(a.cfg.File)
	if err != nil {
		return "", fmt.Errorf("reading token file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("token file %s is empty", a.cfg.File)
	}
	return v, nil
}

func (a tokenAuth) login(ctx context.Context, lc *api.Client) (*api.Secret, error) {
	tok, err := a.read()
	if err != nil {
		return nil, err
	}
	c, err := lc.CloneWithHeaders() // keeps the namespace header
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, classify("looking up the token", err)
	}
	if s == nil || s.Data == nil {
		return nil, errors.New("looking up the token: empty answer from Vault")
	}
	ttl, _ := s.TokenTTL()
	renewable, _ := s.TokenIsRenewable()
	policies, _ := s.TokenPolicies()
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   tok,
		LeaseDuration: int(ttl.Seconds()),
		Renewable:     renewable,
		Policies:      policies,
	}}, nil
}

// appRoleAuth logs in at auth/<mount>/login with a role ID and secret ID,
// both read afresh at every login.
type appRoleAuth struct {
	mount            string
	roleID, secretID secret.Source
}

func (a appRoleAuth) login(ctx context.Context, lc *api.Client) (*api.Secret, error) {
	roleID, err := a.roleID.Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading role_id (%s): %w", a.roleID, err)
	}
	secretID, err := a.secretID.Get(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading secret_id (%s): %w", a.secretID, err)
	}
	s, err := lc.Logical().WriteWithContext(ctx, "auth/"+a.mount+"/login", map[string]any{
		"role_id":   roleID.Reveal(),
		"secret_id": secretID.Reveal(),
	})
	return checkLogin(s, err)
}

// kubernetesAuth logs in at auth/<mount>/login with the service-account JWT.
type kubernetesAuth struct {
	mount, role, jwtFile string
}

func (a kubernetesAuth) login(ctx context.Context, lc *api.Client) (*api.Secret, error) {
	b, err := os.ReadFile(a.jwtFile)
	if err != nil {
		return nil, fmt.Errorf("reading the service-account token: %w", err)
	}
	jwt := strings.TrimSpace(string(b))
	if jwt == "" {
		return nil, fmt.Errorf("service-account token file %s is empty", a.jwtFile)
	}
	s, err := lc.Logical().WriteWithContext(ctx, "auth/"+a.mount+"/login", map[string]any{
		"role": a.role,
		"jwt":  jwt,
	})
	return checkLogin(s, err)
}

func checkLogin(s *api.Secret, err error) (*api.Secret, error) {
	if err != nil {
		return nil, classify("logging in", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("logging in: Vault's answer holds no token")
	}
	return s, nil
}
