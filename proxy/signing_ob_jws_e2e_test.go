package proxy_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

const obPaymentBody = `{"Data":{"Initiation":{"InstructionIdentification":"ACME412","EndToEndIdentification":"FRESCO.21302.GFX.20",` +
	`"InstructedAmount":{"Amount":"165.88","Currency":"GBP"},"CreditorAccount":{"SchemeName":"UK.OBIE.SortCodeAccountNumber",` +
	`"Identification":"08080021325698","Name":"ACME Inc"}}},"Risk":{"PaymentContextCode":"EcommerceGoods"}}`

// obJWSHeader verifies an x-jws-signature over body as the Open Banking specification describes (v3.1.3:
// "b64": false, the signing input being the encoded header, a dot and the body's bytes; PS256 with a salt
// as long as the hash) and returns the protected header.
func obJWSHeader(v string, body []byte, pub crypto.PublicKey) (map[string]any, error) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 || parts[1] != "" {
		return nil, fmt.Errorf("%q is not a detached JWS", v)
	}
	hj, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, err
	}
	var h map[string]any
	if err := json.Unmarshal(hj, &h); err != nil {
		return nil, err
	}
	if h["b64"] != false {
		return nil, fmt.Errorf("header %s: want b64 false", hj)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256([]byte(parts[0] + "." + string(body)))
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if h["alg"] != "PS256" {
			return nil, fmt.Errorf("alg %v", h["alg"])
		}
		if err := rsa.VerifyPSS(k, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}); err != nil {
			return nil, err
		}
	case *ecdsa.PublicKey:
		if h["alg"] != "ES256" || len(sig) != 64 || !ecdsa.Verify(k, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return nil, errors.New("ES256 signature does not verify")
		}
	default:
		return nil, fmt.Errorf("key %T", pub)
	}
	return h, nil
}

// obRequests sends through the proxy a POST with a JSON body (no interaction id, a forged
// x-jws-signature), a POST with the app's interaction id, and a GET, and checks what the upstream
// received: a signature over the exact bytes it got, the interaction id generated or passed through, none
// on the GET, and each interaction id in the request's log line.
func obRequests(t *testing.T, c *http.Client, up *capture, logs *testlog.Capture, pub crypto.PublicKey, kid, iss string) {
	t.Helper()
	const appID = "93bac548-d2de-4546-b106-880a5018460d"
	const target = "http://ob.bank.example/open-banking/v3.1/pisp/domestic-payment-consents"
	for i, tc := range []struct {
		method, body, interactionID string
	}{
		{"POST", obPaymentBody, ""},
		{"POST", obPaymentBody, appID},
		{"GET", "", "not-a-uuid"},
	} {
		var req *http.Request
		if tc.body != "" {
			req, _ = http.NewRequest(tc.method, target, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
		} else {
			req, _ = http.NewRequest(tc.method, target+"/c-1", nil)
		}
		req.Header.Set("x-jws-signature", "forged..c2ln")
		if tc.interactionID != "" {
			req.Header.Set("x-fapi-interaction-id", tc.interactionID)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: %d %s", tc.method, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
		got, body := up.at(i)
		sig := got.Header.Get("x-jws-signature")
		if tc.body == "" {
			if sig != "" {
				t.Fatalf("a GET went upstream with x-jws-signature %q", sig)
			}
		} else {
			if string(body) != tc.body {
				t.Fatalf("upstream body %q", body)
			}
			h, err := obJWSHeader(sig, body, pub)
			if err != nil {
				t.Fatalf("request %d: x-jws-signature does not verify over the bytes the upstream received: %v\n%s", i, err, sig)
			}
			iat, _ := h["http://openbanking.org.uk/iat"].(float64)
			if h["kid"] != kid || h["http://openbanking.org.uk/iss"] != iss || h["http://openbanking.org.uk/tan"] != "openbanking.org.uk" ||
				time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute {
				t.Fatalf("header %v", h)
			}
		}
		id := got.Header.Get("x-fapi-interaction-id")
		switch u, err := uuid.Parse(id); {
		case tc.interactionID == appID && id != appID:
			t.Fatalf("the app's interaction id became %q", id)
		case tc.interactionID != appID && (err != nil || u.Version() != 4 || id == tc.interactionID):
			t.Fatalf("generated interaction id %q (app sent %q)", id, tc.interactionID)
		}
		waitFor(t, 5*time.Second, func() bool { return logs.Count(`"interaction_id":"`+id+`"`) == 1 })
	}
}

// A POST signed by tokenproxy on an ob-detached-jws route arrives with an x-jws-signature that verifies
// over the exact bytes the upstream received, with x-fapi-interaction-id generated or passed through.
func TestOBDetachedJWSThroughProxy(t *testing.T) {
	ca, _ := pki.NewCA("OB test CA")
	dir := t.TempDir()
	qwac, _ := ca.IssueClient("OBWAC")
	seal, _ := ca.IssueClient("OBSeal", pki.WithKeyType(pki.RSA2048))
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	sf, _ := pki.WriteFiles(dir, "seal", seal, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	up := &capture{}
	u := mtlsUpstream(t, ca, up)
	cfg, err := config.Parse(fmt.Appendf(nil, `
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: ob
    hosts: [ob.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: ob-detached-jws
      key_id: 8xQ3yZ1bNwLk2mPq7rTs
      jws_issuer: 0015800001041REAAY/2kiXQyo0tedjW2somjSgH7
      key: {pem: {cert_file: %s, key_file: %s}}
`, u.URL, caFile, qf.Cert, qf.Key, sf.Cert, sf.Key))
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testlog.New(t)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}}
	obRequests(t, c, up, logs, seal.Leaf.PublicKey, "8xQ3yZ1bNwLk2mPq7rTs", "0015800001041REAAY/2kiXQyo0tedjW2somjSgH7")
}

// The same with a non-exportable RSA key in Vault Transit: PS256 through Transit's PSS with the hash's
// salt length.
func TestOBDetachedJWSVaultTransit(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Vault dev server")
	}
	vs := vaulttest.Start(t)
	ca, transit, kv := transitQSealC(t, vs)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	qwac, _ := ca.IssueClient("OBWAC")
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	up := &capture{}
	u := mtlsUpstream(t, ca, up)
	s, logs, _ := startWithVault(t, vs, fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: ob
    hosts: [ob.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: ob-detached-jws
      algorithm: PS256
      key_id: "{serial}"
      jws_issuer: "{subject}"
      key:
        vault_transit: {key: {mount: %s, key: qseal}, certificate: {mount: %s, path: tpp/qseal, field: certificate}}
`, u.URL, caFile, qf.Cert, qf.Key, transit, kv))
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: s.Addr("proxy")})}}
	pubPEM := vs.Read(transit + "/keys/qseal").Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string)
	pub := parseSPKIPEM(t, pubPEM)
	obRequests(t, c, up, logs, pub, "6AEB4444", "CN=TPP QSealC (Transit),O=TPP")
}

func parseSPKIPEM(t *testing.T, s string) crypto.PublicKey {
	t.Helper()
	blk, _ := pem.Decode([]byte(s))
	if blk == nil {
		t.Fatalf("no PEM in %q", s)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
