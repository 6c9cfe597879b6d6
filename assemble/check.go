package assemble

import (
	"errors"
	"fmt"
	"time"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/signer"
)

// Check runs the checks of a decoded configuration that need the builders'
// knowledge, after config's own validation and without loading any
// credential: the vault: block, the Vault certificate blocks and the signing
// options (profile, algorithm, key_id template ...). Every problem is a
// *problem.FieldError; they are joined.
func Check(cfg *config.Config) error {
	var errs []error
	if cfg.Vault != nil {
		errs = append(errs, vaultErrs(VaultConfig(*cfg.Vault).Validate())...)
	}
	for i, r := range cfg.Routes {
		p := fmt.Sprintf("routes[%d](%s)", i, r.Name)
		errs = append(errs, checkCertBlock(p+".client_certificate", r.ClientCert)...)
		if sg := r.Signing; sg != nil {
			errs = append(errs, checkCertBlock(p+".signing.key", sg.Key)...)
			opts := signerOptions(sg.SigningOptions)
			if err := opts.Validate(nil, time.Now()); err != nil {
				var ve *signer.ValidationError
				if errors.As(err, &ve) {
					err = problem.Field(p+".signing."+ve.Field, ve.Msg)
				}
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkCertBlock checks a Vault certificate block with the Vault sources' own checks.
func checkCertBlock(path string, cc config.ClientCertificate) []error {
	switch cc.Kind() {
	case config.CertVaultKV:
		return vaultErrs(kvConfig(*cc.VaultKV).Validate(path + ".vault_kv"))
	case config.CertVaultPKI:
		return vaultErrs(pkiConfig(*cc.VaultPKI).Validate(path + ".vault_pki"))
	case config.CertVaultTransit:
		return vaultErrs(transitConfig(*cc.VaultTransit).Validate(path + ".vault_transit"))
	}
	return nil
}

// vaultErrs lists the field errors of a Vault block's validation (its
// joined *problem.FieldErrors, kept as they are).
func vaultErrs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
