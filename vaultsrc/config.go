package vaultsrc

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
)

// Authentication methods accepted in auth.method.
const (
	MethodToken      = "token"
	MethodAppRole    = "approle"
	MethodKubernetes = "kubernetes"
)

// DefaultKubernetesJWTFile is where Kubernetes mounts a pod's service-account token.
const DefaultKubernetesJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Config is the top-level vault: block of the configuration.
//
//	vault:
//	  address: https://vault.internal:8200
//	  ca_cert: /etc/tokenproxy/vault-ca.pem
//	  namespace: payments
//	  auth:
//	    method: kubernetes
//	    kubernetes: {role: tokenproxy}
type Config struct {
	// Address is Vault's base URL, e.g. https://vault.internal:8200.
	Address string `yaml:"address"`
	// CACert is a PEM file with the CA(s) that signed Vault's server
	// certificate; the system roots are used when empty.
	CACert string `yaml:"ca_cert,omitempty"`
	// TLSServerName overrides the name checked in Vault's certificate.
	TLSServerName string `yaml:"tls_server_name,omitempty"`
	// Namespace is the Vault Enterprise / HCP namespace, if any.
	Namespace string `yaml:"namespace,omitempty"`
	// Timeout bounds one Vault request (default 10s).
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// Auth says how tokenproxy logs in to Vault.
	Auth AuthConfig `yaml:"auth"`
}

// AuthConfig selects and configures the login method.
type AuthConfig struct {
	// Method is token, approle or kubernetes.
	Method     string          `yaml:"method"`
	Token      *TokenAuth      `yaml:"token,omitempty"`
	AppRole    *AppRoleAuth    `yaml:"approle,omitempty"`
	Kubernetes *KubernetesAuth `yaml:"kubernetes,omitempty"`
}

// TokenAuth uses a Vault token that something else obtained (an operator, a
// Vault Agent sink file). Exactly one of Env and File is set; the file is
// re-read at every re-login, so a rotating sink file is followed.
type TokenAuth struct {
	Env  string `yaml:"env,omitempty"`
	File string `yaml:"file,omitempty"`
}

// AppRoleAuth logs in with a role ID and a secret ID.
type AppRoleAuth struct {
	// Mount is the AppRole auth mount (default "approle").
	Mount string `yaml:"mount,omitempty"`
	// Role is the role's name, used only in messages (the role ID is not printed).
	Role string `yaml:"role,omitempty"`
	// RoleID and SecretID come from env or file references (not vault).
	RoleID   secret.Ref `yaml:"role_id"`
	SecretID secret.Ref `yaml:"secret_id"`
}

// KubernetesAuth logs in with the pod's service-account JWT.
type KubernetesAuth struct {
	// Role is the Vault role bound to the service account.
	Role string `yaml:"role"`
	// JWTFile is the service-account token (default DefaultKubernetesJWTFile);
	// it is re-read at every login, so projected tokens that rotate work.
	JWTFile string `yaml:"jwt_file,omitempty"`
	// Mount is the Kubernetes auth mount (default "kubernetes").
	Mount string `yaml:"mount,omitempty"`
}

// withDefaults returns a copy with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if a := c.Auth.AppRole; a != nil && a.Mount == "" {
		cp := *a
		cp.Mount = "approle"
		c.Auth.AppRole = &cp
	}
	if k := c.Auth.Kubernetes; k != nil {
		cp := *k
		if cp.Mount == "" {
			cp.Mount = "kubernetes"
		}
		if cp.JWTFile == "" {
			cp.JWTFile = DefaultKubernetesJWTFile
		}
		c.Auth.Kubernetes = &cp
	}
	return c
}

// Validate checks the block and names the offending field as vault.<field>.
func (c Config) Validate() error {
	var errs []error
	// Every message is "what is wrong; the fix" about the field at path.
	add := func(path, format string, args ...any) {
		errs = append(errs, problem.Field(path, fmt.Sprintf(format, args...)))
	}

	switch c.Address {
	case "":
		add("vault.address", "missing; give Vault's URL, e.g. https://vault.internal:8200")
	default:
		u, err := url.Parse(c.Address)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("vault.address", "%q is not an http(s) URL; give e.g. https://vault.internal:8200", c.Address)
		}
	}
	if c.Timeout < 0 {
		add("vault.timeout", "must be positive (e.g. 10s)")
	}

	a := c.Auth
	set := map[string]bool{MethodToken: a.Token != nil, MethodAppRole: a.AppRole != nil, MethodKubernetes: a.Kubernetes != nil}
	switch a.Method {
	case MethodToken, MethodAppRole, MethodKubernetes:
		for m, ok := range set {
			if ok && m != a.Method {
				add("vault.auth."+m, "set, but vault.auth.method is %q; remove it or change the method", a.Method)
			}
		}
	case "":
		add("vault.auth.method", "missing; use token, approle or kubernetes")
	default:
		add("vault.auth.method", "%q is not supported; use token, approle or kubernetes", a.Method)
	}

	switch a.Method {
	case MethodToken:
		switch t := a.Token; {
		case t == nil:
			add("vault.auth.token", "missing; give env: VAULT_TOKEN or file: /path/to/token")
		case t.Env != "" && t.File != "":
			add("vault.auth.token", "set exactly one of env or file")
		case t.Env == "" && t.File == "":
			add("vault.auth.token", "give env: VAULT_TOKEN or file: /path/to/token")
		}
	case MethodAppRole:
		r := a.AppRole
		if r == nil {
			add("vault.auth.approle", "missing; give role_id and secret_id (env or file references)")
			break
		}
		for _, f := range []struct {
			name string
			ref  secret.Ref
		}{{"role_id", r.RoleID}, {"secret_id", r.SecretID}} {
			path := "vault.auth.approle." + f.name
			if f.ref.Vault != nil {
				add(path, "cannot come from Vault itself; use env or file")
				continue
			}
			if err := f.ref.Validate(path); err != nil {
				errs = append(errs, err)
			}
		}
	case MethodKubernetes:
		k := a.Kubernetes
		if k == nil || k.Role == "" {
			add("vault.auth.kubernetes.role", "missing; name the Vault role bound to this service account")
		}
	}
	return errors.Join(errs...)
}

// authDescription names the method and role for messages; it never contains a secret.
func (c Config) authDescription() string {
	switch c.Auth.Method {
	case MethodToken:
		if t := c.Auth.Token; t != nil && t.File != "" {
			return "token auth (file " + t.File + ")"
		} else if t != nil {
			return "token auth (env " + t.Env + ")"
		}
	case MethodAppRole:
		if r := c.Auth.AppRole; r != nil {
			role := r.Role
			if role == "" {
				role = "role_id from " + refDescription(r.RoleID)
			} else {
				role = "role " + strconvQuote(role)
			}
			return "approle auth at auth/" + r.Mount + " (" + role + ")"
		}
	case MethodKubernetes:
		if k := c.Auth.Kubernetes; k != nil {
			return "kubernetes auth at auth/" + k.Mount + " (role " + strconvQuote(k.Role) + ")"
		}
	}
	return c.Auth.Method + " auth"
}

func refDescription(r secret.Ref) string {
	switch {
	case r.Env != "":
		return "env " + r.Env
	case r.File != "":
		return "file " + r.File
	default:
		return "an unset reference"
	}
}

func strconvQuote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
