package cli_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

// Onboarding with the key in Transit: the CSR comes from Vault, a CA issues
// the certificate, and the chain is imported next to the key.
func TestOnboardTransit(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	srv := vaulttest.Start(t)
	mount := vaulttest.Unique("transit")
	srv.Mount(mount, "transit")
	srv.Write(mount+"/keys/qseal", map[string]any{"type": "rsa-2048", "exportable": false})
	dir := t.TempDir()
	t.Setenv("TP_ONBOARD_VAULT_TOKEN", srv.Token)
	cfg := filepath.Join(dir, "c.yaml")
	// An operator's onboarding file: a vault: block and no routes.
	write(t, cfg, fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_ONBOARD_VAULT_TOKEN}}}\n", srv.Addr))
	key := mount + "/qseal"
	code, out, errOut := run(t, "onboard", "csr", "--config", cfg, "--key", key,
		"--subject", `CN=TPP QSealC,O=Acme\, Ltd,C=DK,organizationIdentifier=PSDDK-DFSA-12345678`)
	if code != 0 {
		t.Fatalf("csr: exit %d %s", code, errOut)
	}
	blk, _ := pem.Decode([]byte(out))
	if blk == nil {
		t.Fatalf("no PEM CSR in %q", out)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	orgID := ""
	for _, a := range csr.Subject.Names {
		if a.Type.String() == "2.5.4.97" {
			orgID, _ = a.Value.(string)
		}
	}
	if csr.Subject.CommonName != "TPP QSealC" || csr.Subject.Organization[0] != "Acme, Ltd" || orgID != "PSDDK-DFSA-12345678" {
		t.Fatalf("subject %q, organizationIdentifier %q", csr.Subject, orgID)
	}
	// The RDNs come in the order given, as the DER shows (pkix.Name would put C first).
	var rdns pkix.RDNSequence
	if _, err := asn1.Unmarshal(csr.RawSubject, &rdns); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, rdn := range rdns {
		for _, a := range rdn {
			order = append(order, a.Type.String())
		}
	}
	if want := []string{"2.5.4.3", "2.5.4.10", "2.5.4.6", "2.5.4.97"}; !slices.Equal(order, want) {
		t.Fatalf("subject attributes in the order %v, want %v (CN, O, C, organizationIdentifier)", order, want)
	}

	ca, _ := pki.NewCA("QTSP")
	leaf, err := ca.CertifyKey("TPP QSealC", csr.PublicKey, pki.WithSubject(csr.Subject), pki.WithSerialNumber(big.NewInt(4242)))
	if err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "chain.pem")
	write(t, chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))+string(ca.CertPEM()))
	if code, out, errOut := run(t, "onboard", "import", "--config", cfg, "--key", key, "--chain", chain); code != 0 || !strings.Contains(out, "imported") {
		t.Fatalf("import: exit %d %s %s", code, out, errOut)
	}
	k := srv.Read(mount + "/keys/qseal").Data["keys"].(map[string]any)["1"].(map[string]any)
	if c, _ := k["certificate_chain"].(string); !strings.Contains(c, "BEGIN CERTIFICATE") {
		t.Fatalf("no chain stored with the key: %v", k)
	}
	// A chain for another key is refused by Vault.
	other, _ := ca.IssueClient("not the transit key")
	otherPEM, _, _ := pki.EncodePEM(other)
	write(t, chain, string(otherPEM))
	if code, _, _ := run(t, "onboard", "import", "--config", cfg, "--key", key, "--chain", chain); code == 0 {
		t.Fatal("a chain for another key was imported")
	}
	if code, _, errOut := run(t, "onboard", "csr", "--config", cfg, "--key", "qseal", "--subject", "CN=x"); code != 64 || !strings.Contains(errOut, "MOUNT/KEY") {
		t.Fatalf("bad --key: %d %s", code, errOut)
	}
}
