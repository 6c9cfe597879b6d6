package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os/exec"
	"testing"

	"github.com/tokenproxy/tokenproxy/testkit/nodetest"
)

// verifyJOSE verifies detached Open Banking JWSs with Node's jose (flattenedVerify), which knows RFC 7797
// and is told the three Open Banking claims are understood, as a bank's verifier must be. Each case
// arrives on stdin as {jws, body (base64), spki (PEM), alg, b64}; one line of JSON per case comes back.
const verifyJOSE = `import * as jose from 'jose';
import { readFileSync } from 'node:fs';

const cases = JSON.parse(readFileSync(0, 'utf8'));
const crit = {
  'http://openbanking.org.uk/iat': true,
  'http://openbanking.org.uk/iss': true,
  'http://openbanking.org.uk/tan': true,
};
for (const c of cases) {
  const [protectedHeader, detached, signature] = c.jws.split('.');
  const body = Buffer.from(c.body, 'base64');
  try {
    if (detached !== '') throw new Error('payload part not empty');
    const key = await jose.importSPKI(c.spki, c.alg);
    const payload = c.b64 ? jose.base64url.encode(body) : new Uint8Array(body);
    const r = await jose.flattenedVerify({ protected: protectedHeader, payload, signature }, key, { algorithms: [c.alg], crit });
    console.log(JSON.stringify({ ok: true, header: r.protectedHeader }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e.code || '') + ' ' + e.message }));
  }
}
`

type joseCase struct {
	JWS  string `json:"jws"`
	Body []byte `json:"body"` // base64 in JSON
	SPKI string `json:"spki"`
	Alg  string `json:"alg"`
	B64  bool   `json:"b64"`
}

type joseResult struct {
	OK     bool           `json:"ok"`
	Header map[string]any `json:"header"`
	Error  string         `json:"error"`
}

func runJOSE(t *testing.T, cases []joseCase) []joseResult {
	t.Helper()
	in, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	script := nodetest.Script(t, "verify-ob-jws.mjs", []byte(verifyJOSE))
	cmd := exec.Command(nodetest.Node(t), script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var res []joseResult
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var r joseResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("node output %q: %v", out, err)
		}
		res = append(res, r)
	}
	if len(res) != len(cases) {
		t.Fatalf("node answered %d cases of %d: %s", len(res), len(cases), out)
	}
	return res
}

func spkiPEM(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// Every form of the header verifies with an implementation we did not write; a changed body, a JWS from
// another key and the v3.1.3 JWS read as v3.1.4 (or the reverse) do not.
func TestOBDetachedJWSNodeJose(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Node")
	}
	p := getPKI(t)
	body := []byte(obBody)
	var cases []joseCase
	type want struct {
		name string
		ok   bool
	}
	var wants []want
	otherEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]crypto.PublicKey{"PS256": &p.otherRSA.PublicKey, "ES256": &otherEC.PublicKey}
	for _, f := range []struct {
		name string
		key  *tls.Certificate
		alg  string
		b64  bool // jws_b64_claim
	}{
		{"PS256 b64:false", p.rsa, "PS256", true},
		{"PS256 without b64", p.rsa, "PS256", false},
		{"ES256 b64:false", p.ecdsa, "ES256", true},
		{"ES256 without b64", p.ecdsa, "ES256", false},
	} {
		opts := Options{Profile: ProfileOBDetachedJWS, KeyID: "kid-1", JWSIssuer: obIssuer, JWSB64Claim: boolp(f.b64)}
		v := obSign(t, opts, f.key, http.MethodPost, "application/json", body, nil).Header.Get("x-jws-signature")
		c := joseCase{JWS: v, Body: body, SPKI: spkiPEM(t, f.key.Leaf.PublicKey), Alg: f.alg, B64: !f.b64}
		cases = append(cases, c)
		wants = append(wants, want{f.name, true})

		tampered := c
		tampered.Body = append(append([]byte(nil), body...), '\n')
		cases = append(cases, tampered)
		wants = append(wants, want{f.name + ", body changed", false})

		otherKey := c
		otherKey.SPKI = spkiPEM(t, other[f.alg])
		cases = append(cases, otherKey)
		wants = append(wants, want{f.name + ", another key", false})

		swapped := c
		swapped.B64 = !c.B64
		cases = append(cases, swapped)
		wants = append(wants, want{f.name + ", payload encoding swapped", false})
	}
	res := runJOSE(t, cases)
	for i, w := range wants {
		r := res[i]
		if r.OK != w.ok {
			t.Errorf("%s: jose ok=%v (%s); want ok=%v\nx-jws-signature: %s", w.name, r.OK, r.Error, w.ok, cases[i].JWS)
			continue
		}
		if !w.ok {
			continue
		}
		h := r.Header
		if h["kid"] != "kid-1" || h[ClaimOBIssuer] != obIssuer || h[ClaimOBTrustAnchor] != DefaultTrustAnchor ||
			h["typ"] != "JOSE" || h["cty"] != "application/json" || h[ClaimOBIssuedAt] != float64(obNow) {
			t.Errorf("%s: header as jose read it: %v", w.name, h)
		}
	}
}
