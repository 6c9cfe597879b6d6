package cli

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// oidOrganizationIdentifier is X.520 organizationIdentifier (2.5.4.97), which
// PSD2 certificates (QWAC, QSealC) carry as "PSDxx-<authority>-<id>".
var oidOrganizationIdentifier = asn1.ObjectIdentifier{2, 5, 4, 97}

func (e *env) onboardCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "onboard",
		Short: "Onboard a Vault Transit key with a bank or QTSP: make a CSR, import the issued chain",
		Long: `The private key stays in Vault Transit from the first step on:

  tokenproxy onboard csr    --config FILE --key transit/qseal --subject "CN=TPP,O=Acme,C=DK,organizationIdentifier=PSDDK-DFSA-123"
      prints a PKCS #10 request made and signed by Vault (transit/keys/<key>/csr);
      send it to the QTSP or bank;
  tokenproxy onboard import --config FILE --key transit/qseal --chain chain.pem
      stores the chain they return next to the key (transit/keys/<key>/set-certificate;
      Vault checks that the certificate is the key's).

A route then signs (or presents TLS) with vault_transit: {key: {mount: transit, key: qseal}} and
no certificate: block. The configuration's vault: block says how to log in; the Vault policy for
these steps is an operator's, not the sidecar's.`,
	}
	var path, key, subject, out, chain string
	var dns []string
	var version int
	csr := &cobra.Command{
		Use:   "csr --config FILE --key MOUNT/KEY --subject DN",
		Short: "Ask Vault Transit for a certificate signing request for a key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kc, err := parseTransitKey(key)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			name, rawSubject, err := parseSubject(subject)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			vc, err := e.onboardVault(path)
			if err != nil {
				return err
			}
			defer vc.Close()
			pemCSR, err := vc.TransitCSR(e.context(), kc, version, &x509.CertificateRequest{Subject: name, RawSubject: rawSubject, DNSNames: dns})
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(pemCSR)
				return err
			}
			if err := os.WriteFile(out, pemCSR, 0o644); err != nil { //nolint:gosec // a CSR is public
				return &ExitError{Code: ExitFailure, Err: err}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote the CSR for %s to %s\n", key, out)
			return nil
		},
	}
	imp := &cobra.Command{
		Use:   "import --config FILE --key MOUNT/KEY --chain FILE",
		Short: "Import the certificate chain issued for a Transit key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kc, err := parseTransitKey(key)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			pemChain, err := os.ReadFile(chain) //nolint:gosec // the operator names the file
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: fmt.Errorf("--chain: %w", err)}
			}
			vc, err := e.onboardVault(path)
			if err != nil {
				return err
			}
			defer vc.Close()
			if err := vc.TransitSetCertificateChain(e.context(), kc, version, pemChain); err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported the certificate chain for %s\n", key)
			return nil
		},
	}
	for _, c := range []*cobra.Command{csr, imp} {
		c.Flags().StringVarP(&path, "config", "c", "", "configuration file (its vault: block)")
		c.Flags().StringVar(&key, "key", "", "the Transit key as MOUNT/KEY, e.g. transit/qseal")
		c.Flags().IntVar(&version, "version", 0, "key version (0: the latest)")
	}
	csr.Flags().StringVar(&subject, "subject", "", `subject DN, e.g. "CN=TPP QSealC,O=Acme Ltd,C=DK,organizationIdentifier=PSDDK-DFSA-12345678"`)
	csr.Flags().StringSliceVar(&dns, "dns", nil, "DNS names (for a QWAC)")
	csr.Flags().StringVarP(&out, "out", "o", "-", "where to write the CSR (PEM)")
	imp.Flags().StringVar(&chain, "chain", "", "PEM file with the issued certificate first, then its CA chain")
	cmd.AddCommand(csr, imp)
	return cmd
}

func (e *env) onboardVault(path string) (*vaultsrc.Client, error) {
	cfg, err := e.loadOnboardConfig(path)
	if err != nil {
		return nil, err
	}
	if cfg.Vault == nil {
		return nil, &ExitError{Code: ExitConfig, Err: errors.New("the configuration has no vault: block")}
	}
	log, err := e.buildLogger(cfg.Log)
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: err}
	}
	a := assemble.New(cfg, assemble.Setup{Log: log})
	if err := a.OpenVault(e.context()); err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: err}
	}
	return a.Vault, nil // the caller closes it
}

// loadOnboardConfig loads the configuration for the onboarding commands, which
// use only its vault: and log: blocks. A file with routes is loaded and
// validated in full, as for serving; a file with a vault: block and no routes
// (an operator's onboarding settings, kept apart from the sidecar's) is
// decoded as strictly, and its vault: block is validated when logging in.
func (e *env) loadOnboardConfig(path string) (*config.Config, error) {
	if path == "" {
		return e.loadConfig(path)
	}
	data, err := os.ReadFile(path) //nolint:gosec // the operator names the configuration file
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: fmt.Errorf("reading configuration: %w", err)}
	}
	cfg, err := config.Decode(data)
	if err != nil || len(cfg.Routes) > 0 {
		return e.loadConfig(path) // the full load and its messages
	}
	cfg.ApplyDefaults()
	if e.logLevel != "" {
		cfg.Log.Level = e.logLevel
	}
	if e.logFormat != "" {
		cfg.Log.Format = e.logFormat
	}
	return cfg, nil
}

func parseTransitKey(s string) (vaultsrc.TransitKeyConfig, error) {
	mount, key, ok := strings.Cut(strings.Trim(s, "/"), "/")
	if !ok || mount == "" || key == "" || strings.Contains(key, "/") {
		return vaultsrc.TransitKeyConfig{}, fmt.Errorf("--key %q: write MOUNT/KEY, e.g. transit/qseal", s)
	}
	return vaultsrc.TransitKeyConfig{Mount: mount, Key: key}, nil
}

// subjectAttributes are the --subject keys and their X.520 attribute types.
var subjectAttributes = map[string]asn1.ObjectIdentifier{
	"cn":                     {2, 5, 4, 3},
	"c":                      {2, 5, 4, 6},
	"l":                      {2, 5, 4, 7},
	"st":                     {2, 5, 4, 8},
	"o":                      {2, 5, 4, 10},
	"ou":                     {2, 5, 4, 11},
	"organizationidentifier": oidOrganizationIdentifier,
	"2.5.4.97":               oidOrganizationIdentifier,
}

// parseSubject reads "CN=..,O=..,OU=..,C=..,L=..,ST=..,organizationIdentifier=.."
// (a comma inside a value is written \,). It returns the name and its DER
// encoding with one RDN per attribute in the order given: a QTSP may check
// the order, which pkix.Name alone would not keep.
func parseSubject(s string) (pkix.Name, []byte, error) {
	var n pkix.Name
	if strings.TrimSpace(s) == "" {
		return n, nil, errors.New(`--subject is required, e.g. "CN=TPP QSealC,O=Acme Ltd,C=DK"`)
	}
	var rdns pkix.RDNSequence
	for _, p := range splitSubject(s) {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			return n, nil, fmt.Errorf("--subject: %q is not KEY=VALUE", p)
		}
		oid, known := subjectAttributes[strings.ToLower(strings.TrimSpace(k))]
		if !known {
			return n, nil, fmt.Errorf("--subject: unknown attribute %q (use CN, O, OU, C, L, ST, organizationIdentifier)", k)
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
	}
	raw, err := asn1.Marshal(rdns)
	if err != nil {
		return n, nil, fmt.Errorf("--subject: encoding: %w", err)
	}
	n.FillFromRDNSequence(&rdns)
	return n, raw, nil
}

// splitSubject splits a DN at commas, unescaping "\," and "\\".
func splitSubject(s string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case s[i] == ',':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(parts, cur.String())
}
