package assemble

import (
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/signer"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// The configuration's plain blocks, as the Vault sources and the signer take them.

// VaultConfig converts the vault: block for vaultsrc.New.
func VaultConfig(v config.Vault) vaultsrc.Config {
	c := vaultsrc.Config{Address: v.Address, CACert: v.CACert, TLSServerName: v.TLSServerName,
		Namespace: v.Namespace, Timeout: v.Timeout, Auth: vaultsrc.AuthConfig{Method: v.Auth.Method}}
	if t := v.Auth.Token; t != nil {
		c.Auth.Token = &vaultsrc.TokenAuth{Env: t.Env, File: t.File}
	}
	if a := v.Auth.AppRole; a != nil {
		c.Auth.AppRole = &vaultsrc.AppRoleAuth{Mount: a.Mount, Role: a.Role, RoleID: a.RoleID, SecretID: a.SecretID}
	}
	if k := v.Auth.Kubernetes; k != nil {
		c.Auth.Kubernetes = &vaultsrc.KubernetesAuth{Role: k.Role, JWTFile: k.JWTFile, Mount: k.Mount}
	}
	return c
}

func kvConfig(k config.VaultKV) vaultsrc.KVCertConfig { return vaultsrc.KVCertConfig(k) }

func pkiConfig(p config.VaultPKI) vaultsrc.PKIConfig { return vaultsrc.PKIConfig(p) }

func transitConfig(t config.VaultTransit) vaultsrc.TransitCertConfig {
	return vaultsrc.TransitCertConfig{Key: vaultsrc.TransitKeyConfig(t.Key), Certificate: t.Certificate, PollInterval: t.PollInterval}
}

func signerOptions(o config.SigningOptions) signer.Options { return signer.Options(o) }
