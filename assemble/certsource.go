package assemble

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"time"

	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/secret"
)

// CertSource returns the source of a client_certificate or signing.key block
// and the configuration path suffix naming it (".pkcs12", ".vault_kv", ...),
// or nil when the block is empty. This is the one place that turns a block's
// kind into a source; Vault PKI, which issues rather than loads, is built by
// the route itself. A source that cannot be opened (a missing passcode, no
// Vault client) fails on its first fetch, with the path of the field at fault.
func CertSource(cc config.ClientCertificate, o Options) (certs.Source, string) {
	kind := cc.Kind()
	switch kind {
	case config.CertInCode:
		if src := o.Certificates[cc.InCode]; src != nil {
			return src, ""
		}
		return &failingSource{err: errors.New("no in-code certificate source named " + cc.InCode)}, ""
	case config.CertVaultKV:
		if o.Vault == nil {
			return &failingSource{err: secret.ErrNoVault}, "." + kind
		}
		return o.Vault.KVCertSource(kvConfig(*cc.VaultKV)), "." + kind
	case config.CertVaultTransit:
		if o.Vault == nil {
			return &failingSource{err: secret.ErrNoVault}, "." + kind
		}
		return o.Vault.TransitCertSource(transitConfig(*cc.VaultTransit)), "." + kind
	case config.CertPKCS12:
		pass, err := cc.PKCS12.Passcode.Open(o.vault())
		if err != nil {
			return &failingSource{err: &passcodeError{err}}, ".pkcs12"
		}
		return &certs.FileSource{PKCS12File: cc.PKCS12.File, Passcode: &passcode{pass}}, ".pkcs12"
	case config.CertPEM:
		return &certs.FileSource{CertFile: cc.PEM.CertFile, KeyFile: cc.PEM.KeyFile}, ".pem"
	}
	return nil, ""
}

// passcodeError is a PKCS#12 passcode that could not be read (an unset
// environment variable, a missing file, Vault): the fix is the secret's, not
// the file's.
type passcodeError struct{ err error }

func (e *passcodeError) Error() string { return "passcode: " + e.err.Error() }
func (e *passcodeError) Unwrap() error { return e.err }

// passcode marks the errors of reading a PKCS#12 passcode as passcodeErrors.
type passcode struct{ secret.Source }

func (p *passcode) Get(ctx context.Context) (secret.Value, error) {
	v, err := p.Source.Get(ctx)
	if err != nil {
		return v, &passcodeError{err}
	}
	return v, nil
}

type failingSource struct{ err error }

func (f *failingSource) Fetch(context.Context, string) (*tls.Certificate, string, error) {
	return nil, "", f.err
}
func (f *failingSource) String() string { return "unavailable" }

// pollInterval is how often a certificate source is checked: the source's
// own interval when it has one (the Vault sources apply their poll_interval
// and its default), else the block's reload_interval.
func pollInterval(src certs.Source, cc config.ClientCertificate) time.Duration {
	if p, ok := src.(interface{ PollInterval() time.Duration }); ok {
		return p.PollInterval()
	}
	return cc.ReloadInterval
}

// CertError names the field and the fix for each way loading a certificate
// block of kind (a config.Cert* constant) at path can fail.
func CertError(path, kind string, err error) *problem.FieldError {
	var exp *certs.ExpiredError
	var nyv *certs.NotYetValidError
	var pe *passcodeError
	switch {
	case errors.As(err, &pe):
		return &problem.FieldError{Path: path + ".passcode", Err: pe.err, Fix: "make the passcode secret available (set the environment variable, create the file or the Vault field it names)"}
	case errors.Is(err, fs.ErrNotExist):
		return &problem.FieldError{Path: path, Err: err, Fix: "the file does not exist; check the path"}
	case errors.Is(err, fs.ErrPermission):
		return &problem.FieldError{Path: path, Err: err, Fix: "tokenproxy may not read the file; check its owner and mode"}
	case errors.Is(err, certs.ErrWrongPasscode):
		return &problem.FieldError{Path: path + ".passcode", Err: certs.ErrWrongPasscode, Fix: "set the passcode the provider gave with the .pfx file"}
	case errors.Is(err, certs.ErrKeyMismatch):
		return &problem.FieldError{Path: path, Err: certs.ErrKeyMismatch, Fix: "pair the certificate with the private key it was issued for"}
	case errors.As(err, &exp):
		return &problem.FieldError{Path: path, Err: exp, Fix: "ask the provider for a renewed certificate"}
	case errors.As(err, &nyv):
		return &problem.FieldError{Path: path, Err: nyv}
	case errors.Is(err, secret.ErrNoVault):
		return &problem.FieldError{Path: path, Err: err}
	}
	var fix string
	switch kind {
	case config.CertVaultTransit:
		fix = "check that the Transit key exists and that its certificate chain was imported with `tokenproxy onboard import` (or that certificate: names the KV field holding it)"
	case config.CertVaultKV:
		fix = "check that the KV secret holds a base64 PKCS#12 and its passcode, or a PEM certificate and key, in the configured fields"
	case config.CertInCode:
	default:
		fix = "check that the file is a PKCS#12 (.pfx/.p12) or PEM certificate with its key"
	}
	return &problem.FieldError{Path: path, Err: err, Fix: fix}
}
