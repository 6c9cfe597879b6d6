package config

import (
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// Vault is the top-level vault: block: the Vault server that secrets,
// certificates and signing keys can come from, and how to log in.
//
//	vault:
//	  address: https://vault.internal:8200
//	  auth: {method: kubernetes, kubernetes: {role: tokenproxy}}
type Vault struct {
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
	Auth VaultAuth `yaml:"auth"`
}

// VaultAuth selects and configures the login method: token, approle or kubernetes.
type VaultAuth struct {
	Method     string               `yaml:"method"`
	Token      *VaultTokenAuth      `yaml:"token,omitempty"`
	AppRole    *VaultAppRoleAuth    `yaml:"approle,omitempty"`
	Kubernetes *VaultKubernetesAuth `yaml:"kubernetes,omitempty"`
}

// VaultTokenAuth uses a Vault token from an environment variable or a file
// (exactly one), re-read at every re-login.
type VaultTokenAuth struct {
	Env  string `yaml:"env,omitempty"`
	File string `yaml:"file,omitempty"`
}

// VaultAppRoleAuth logs in with a role ID and a secret ID (env or file references).
type VaultAppRoleAuth struct {
	Mount    string     `yaml:"mount,omitempty"`
	Role     string     `yaml:"role,omitempty"`
	RoleID   secret.Ref `yaml:"role_id"`
	SecretID secret.Ref `yaml:"secret_id"`
}

// VaultKubernetesAuth logs in with the pod's service-account JWT.
type VaultKubernetesAuth struct {
	Role    string `yaml:"role"`
	JWTFile string `yaml:"jwt_file,omitempty"`
	Mount   string `yaml:"mount,omitempty"`
}

// VaultKV is a certificate kept in Vault KV v2: a PFX (base64) and its
// passcode, or a PEM certificate and key.
type VaultKV struct {
	Mount         string        `yaml:"mount,omitempty"`
	Path          string        `yaml:"path"`
	PKCS12Field   string        `yaml:"pkcs12_field,omitempty"`
	PasscodeField string        `yaml:"passcode_field,omitempty"`
	CertField     string        `yaml:"cert_field,omitempty"`
	KeyField      string        `yaml:"key_field,omitempty"`
	PollInterval  time.Duration `yaml:"poll_interval,omitempty"`
}

// VaultPKI issues a short-lived client certificate from Vault's PKI engine.
type VaultPKI struct {
	Mount         string        `yaml:"mount,omitempty"`
	Role          string        `yaml:"role"`
	CommonName    string        `yaml:"common_name"`
	AltNames      []string      `yaml:"alt_names,omitempty"`
	IPSANs        []string      `yaml:"ip_sans,omitempty"`
	TTL           time.Duration `yaml:"ttl,omitempty"`
	RetryInterval time.Duration `yaml:"retry_interval,omitempty"`
}

// VaultTransitKey names a Transit key.
type VaultTransitKey struct {
	Mount string `yaml:"mount,omitempty"`
	Key   string `yaml:"key"`
}

// VaultTransit keeps the private key in Vault Transit (never readable); the
// certificate comes from a KV field or, when Certificate is empty, from the
// chain stored with the key.
type VaultTransit struct {
	Key          VaultTransitKey `yaml:"key"`
	Certificate  secret.VaultRef `yaml:"certificate"`
	PollInterval time.Duration   `yaml:"poll_interval,omitempty"`
}
