package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/certs"
	"github.com/tokenproxy/tokenproxy/config"
)

// checkCertificate loads the client certificate through the route builder's
// own source and reports on it.
func (d *routeCheck) checkCertificate(ctx context.Context) bool {
	cc := d.rc.ClientCert
	switch cc.Kind() {
	case "":
		d.step("client certificate", Skip, "none configured", "")
		return true
	case config.CertVaultPKI:
		d.step("client certificate", OK, "issued from Vault PKI role "+cc.VaultPKI.Role+" when the route is built", "")
		return true
	case config.CertPKCS12:
		if !d.readable("pkcs12 file", cc.PKCS12.File) {
			return false
		}
	case config.CertPEM:
		if !d.readable("certificate file", cc.PEM.CertFile) || !d.readable("key file", cc.PEM.KeyFile) {
			return false
		}
	}
	src, cp := assemble.CertSource(cc, d.o.Build)
	c, _, err := src.Fetch(ctx, "")
	if cc.Kind() == config.CertPKCS12 && !d.passcodeStep(err) {
		return false
	}
	if err != nil {
		fe := assemble.CertError(d.path()+".client_certificate"+cp, cc.Kind(), err)
		d.step("certificate", Fail, err.Error(), fe.Fix)
		return false
	}
	if d.rc.TLS.CAFile != "" && !d.readable("ca file", d.rc.TLS.CAFile) {
		return false
	}
	return d.describe(c)
}

// passcodeStep reports whether the PKCS#12 passcode opened the file, given
// the error of loading it.
func (d *routeCheck) passcodeStep(err error) bool {
	file := d.rc.ClientCert.PKCS12.File
	fe := assemble.CertError(d.path()+".client_certificate.pkcs12", config.CertPKCS12, err)
	switch {
	case err == nil || errors.Is(err, certs.ErrKeyMismatch):
		d.step("pkcs12 passcode", OK, "opens "+file, "")
		return true
	case errors.Is(err, certs.ErrWrongPasscode):
		d.step("pkcs12 passcode", Fail, "the passcode does not open "+file, "set the passcode the provider gave with this .pfx file (Banking Circle: the one you set when resetting the initial passphrase)")
	case fe.Path == d.path()+".client_certificate.pkcs12.passcode":
		d.step("pkcs12 passcode", Fail, fe.Err.Error(), fe.Fix)
	default:
		d.step("pkcs12 passcode", Fail, err.Error(), "check that the file is the PKCS#12 (.pfx) the provider issued")
	}
	return false
}

// describe reports the loaded certificate: who, until when, its chain.
func (d *routeCheck) describe(c *tls.Certificate) bool {
	leaf := c.Leaf
	desc := fmt.Sprintf("%q issued by %q, %s, serial %s", leaf.Subject.String(), leaf.Issuer.String(), certs.KeyDescription(leaf.PublicKey), leaf.SerialNumber.Text(16))
	if err := certs.Check(c, time.Now()); err != nil {
		d.step("certificate", Fail, desc+": "+err.Error(), "ask the provider for a renewed certificate")
		return false
	}
	left := time.Until(leaf.NotAfter)
	v, fix := OK, ""
	if left < d.o.ExpiryWarning {
		v, fix = Warn, "renew the certificate before it expires"
	}
	d.step("certificate", v, fmt.Sprintf("%s; valid until %s (%d days), key matches", desc, leaf.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24)), fix)
	if len(c.Certificate) > 1 {
		issuer, err := x509.ParseCertificate(c.Certificate[1])
		if err == nil {
			err = leaf.CheckSignatureFrom(issuer)
		}
		if err != nil {
			d.step("certificate chain", Warn, "the chain in the file does not start with the leaf's issuer", "include the intermediate CA certificates in order")
		} else {
			d.step("certificate chain", OK, fmt.Sprintf("%d CA certificate(s) included", len(c.Certificate)-1), "")
		}
	}
	d.cert = c
	return true
}

func (d *routeCheck) readable(what, path string) bool {
	f, err := os.Open(path) //nolint:gosec // a path from the operator's configuration
	if err != nil {
		fix := "check the path"
		if errors.Is(err, os.ErrPermission) {
			fix = "let tokenproxy's user read it (owner/mode)"
		}
		d.step(what, Fail, err.Error(), fix)
		return false
	}
	f.Close()
	return true
}
