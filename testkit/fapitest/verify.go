package fapitest

import (
	"crypto"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tokenproxy/tokenproxy/internal/jws"
	"github.com/tokenproxy/tokenproxy/testkit/nodetest"
)

//go:embed verify.mjs
var verifyScript []byte

// VerifyDetachedJWS verifies the detached JWS sig ("<header>..<signature>")
// over body with Node's jose library (flattenedVerify), independently of the
// Go code that signed it: an unencoded payload when the header says
// "b64": false (RFC 7797, as UK Open Banking's x-jws-signature), a
// base64url-encoded one otherwise. The header's crit may list b64 and the
// Open Banking claims http://openbanking.org.uk/{iat,iss,tan}; their values
// are for the caller to check. Algorithms: PS256, ES256, RS256.
//
// key is a crypto.PublicKey (ECDSA P-256 or RSA), an *x509.Certificate, a
// JWK (map[string]any) or PEM bytes (a CERTIFICATE or a PUBLIC KEY). It
// returns jose's reason when the signature does not verify, and fails the
// test when node cannot run.
func VerifyDetachedJWS(t testing.TB, sig string, body []byte, key any) error {
	t.Helper()
	in := map[string]any{"jws": sig, "body_b64": base64.StdEncoding.EncodeToString(body)}
	switch k := key.(type) {
	case *x509.Certificate:
		in["pem"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Raw}))
	case []byte:
		in["pem"] = string(k)
	case map[string]any:
		in["jwk"] = k
	case crypto.PublicKey:
		j, err := jws.JWK(k)
		if err != nil {
			t.Fatalf("fapitest: %v", err)
		}
		in["jwk"] = j
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	path := filepath.Join(t.TempDir(), "jws.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatalf("fapitest: %v", err)
	}
	script := nodetest.Script(t, "fapi-verify.mjs", verifyScript)
	out, err := exec.Command(nodetest.Node(t), script, path).Output() //nolint:gosec // G204: node on PATH, the embedded script and its input file
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("fapitest: node verify: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("fapitest: node verify: %v", err)
	}
	var res struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("fapitest: node verify answered %q: %v", out, err)
	}
	if !res.OK {
		return fmt.Errorf("jose: %s", res.Error)
	}
	return nil
}
