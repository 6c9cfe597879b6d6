package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-fed/httpsig"
	"github.com/yaronf/httpsign"
)

// captured is a request as the server received it.
type captured struct {
	req  *http.Request
	body []byte
}

// clone returns a fresh copy that a verifier may consume or a test may tamper with.
func (c captured) clone() (*http.Request, []byte) {
	r := c.req.Clone(c.req.Context())
	b := append([]byte(nil), c.body...)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return r, b
}

// roundTrip signs a request with s, sends it to a TLS server on 127.0.0.1 and returns what arrived.
func roundTrip(t *testing.T, s Signer, method, path string, body []byte, hdr map[string]string) captured {
	t.Helper()
	got := make(chan captured, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- captured{req: r.Clone(r.Context()), body: b}
	}))
	defer srv.Close()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(body) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if err := s.Sign(req, body); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("sending: %v", err)
	}
	resp.Body.Close()
	select {
	case c := <-got:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("server saw no request")
	}
	return captured{}
}

// cavageParams parses the parameters of a draft-cavage Signature header, honouring quoted commas.
func cavageParams(t *testing.T, v string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for v != "" {
		eq := strings.IndexByte(v, '=')
		if eq < 0 || len(v) < eq+2 || v[eq+1] != '"' {
			t.Fatalf("malformed Signature header at %q", v)
		}
		end := strings.IndexByte(v[eq+2:], '"')
		if end < 0 {
			t.Fatalf("unterminated value in %q", v)
		}
		out[v[:eq]] = v[eq+2 : eq+2+end]
		v = strings.TrimPrefix(v[eq+2+end+1:], ",")
	}
	return out
}

type interopCase struct {
	name   string
	method string
	body   []byte
	hdr    map[string]string
	// mustCover are headers the signature has to cover in this case.
	mustCover []string
}

var interopCases = []interopCase{
	{name: "POST JSON", method: http.MethodPost, body: []byte(`{"instructedAmount":{"currency":"EUR","amount":"123.50"}}`),
		hdr: map[string]string{"Content-Type": "application/json"}},
	{name: "GET without body", method: http.MethodGet},
	{name: "psu headers", method: http.MethodGet, hdr: map[string]string{"PSU-ID": "PSU-1234", "PSU-Corporate-ID": "corp-9",
		"TPP-Redirect-URI": "https://tpp.example/cb", "PSU-IP-Address": "192.168.0.1", "PSU-User-Agent": "Mozilla/5.0"},
		mustCover: []string{"psu-id"}},
	{name: "non-ASCII header value", method: http.MethodPost, body: []byte(`{"name":"Jörg"}`),
		hdr: map[string]string{"Content-Type": "application/json", "PSU-ID": "Jörg Ødegård"}, mustCover: []string{"psu-id"}},
}

func TestInteropCavage(t *testing.T) {
	p := getPKI(t)
	profiles := []struct {
		name    string
		opts    Options
		key     *tls.Certificate
		keyID   string
		covered []string
	}{
		{name: "berlin-group", opts: Options{Profile: ProfileBerlinGroup}, key: p.rsa,
			keyID: "SN=6AEB4444FBAAD267,CA=O=PSDNO-FSA-ABCA,L=Trondheim,C=NO", covered: []string{"digest", "x-request-id", "date"}},
		{name: "berlin-group non-ASCII issuer", opts: Options{Profile: ProfileBerlinGroup}, key: p.rsaOther,
			keyID:   "SN=A0B,CA=2.5.4.97=#130e5053444e4f2d4653412d41424341,O=Bank Ø Test CA,L=Ålesund,C=NO",
			covered: []string{"digest", "x-request-id", "date"}},
		{name: "stet", opts: Options{Profile: ProfileSTET, KeyID: "https://tpp.example/qsealc.pem", Algorithm: "rsa-sha512"}, key: p.rsa,
			keyID: "https://tpp.example/qsealc.pem", covered: []string{"(request-target)", "digest", "x-request-id", "date"}},
		{name: "stet public key", opts: Options{Profile: ProfileSTET, KeyID: "{public_key}"}, key: p.rsa,
			keyID: base64.StdEncoding.EncodeToString(p.rsa.Leaf.RawSubjectPublicKeyInfo), covered: []string{"(request-target)", "digest"}},
		{name: "custom", opts: Options{Profile: ProfileCustom, KeyID: "tpp-{serial_decimal}", Digest: "SHA-512",
			Headers: []string{"(request-target)", "host", "date", "digest", "x-request-id"}, OptionalHeaders: []string{"psu-*"},
			CertificateHeader: "X-Signing-Cert"}, key: p.rsa,
			keyID: "tpp-" + p.rsa.Leaf.SerialNumber.String(), covered: []string{"(request-target)", "host", "date", "digest", "x-request-id"}},
	}
	for _, pr := range profiles {
		for _, tc := range interopCases {
			t.Run(pr.name+"/"+tc.name, func(t *testing.T) {
				s, err := New(pr.opts, StaticKey{pr.key})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				// go-fed/httpsig rebuilds (request-target) from the decoded path, so this path has no escapes;
				// TestRequestTargetEscaped covers escaped paths.
				c := roundTrip(t, s, tc.method, "/v1/accounts/3dc3d5b3-7023-4848?withBalance=true", tc.body, tc.hdr)
				pub := pr.key.Leaf.PublicKey
				if err := verifyCavage(t, c, pub, pr.keyID, append(pr.covered, tc.mustCover...)); err != nil {
					t.Fatalf("verification failed: %v", err)
				}
				if pr.opts.Profile == ProfileBerlinGroup {
					der, err := base64.StdEncoding.DecodeString(c.req.Header.Get("TPP-Signature-Certificate"))
					if err != nil || !bytes.Equal(der, pr.key.Leaf.Raw) {
						t.Errorf("TPP-Signature-Certificate does not carry the signing certificate")
					}
				}

				// Tampering after signing must break verification.
				r, b := c.clone()
				tb := append(b, ' ')
				if verifyCavage(t, captured{req: r, body: tb}, pub, pr.keyID, pr.covered) == nil {
					t.Error("tampered body still verifies")
				}
				r, b = c.clone()
				r.Header.Set("X-Request-ID", "00000000-0000-4000-8000-000000000000")
				if tc.hdr["PSU-ID"] != "" {
					r.Header.Set("PSU-ID", "someone-else")
				}
				if verifyCavage(t, captured{req: r, body: b}, pub, pr.keyID, pr.covered) == nil {
					t.Error("tampered header still verifies")
				}
			})
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// verifyCavage checks a received request with go-fed/httpsig plus the checks it leaves to us:
// the keyId (go-fed splits keyIds at commas), the covered headers and the Digest over the body.
func verifyCavage(t *testing.T, c captured, pub crypto.PublicKey, keyID string, mustCover []string) error {
	t.Helper()
	r, body := c.clone()
	sigHeader, err := DecodeRFC2047(r.Header.Get("Signature"))
	if err != nil {
		return err
	}
	r.Header.Set("Signature", sigHeader)
	params := cavageParams(t, sigHeader)
	if params["keyId"] != keyID {
		return errString("keyId " + params["keyId"] + ", want " + keyID)
	}
	covered := " " + params["headers"] + " "
	for _, h := range mustCover {
		if !strings.Contains(covered, " "+h+" ") {
			return errString("header " + h + " not covered: " + params["headers"])
		}
	}
	for _, want := range []string{"digest", "date", "x-request-id"} {
		if len(r.Header.Values(want)) == 0 {
			return errString(want + " header missing")
		}
	}
	var sum []byte
	d := r.Header.Get("Digest")
	switch {
	case strings.HasPrefix(d, "SHA-256="):
		s := sha256.Sum256(body)
		sum = s[:]
	case strings.HasPrefix(d, "SHA-512="):
		s := sha512Sum(body)
		sum = s
	default:
		return errString("unexpected Digest " + d)
	}
	if d[strings.IndexByte(d, '=')+1:] != base64.StdEncoding.EncodeToString(sum) {
		return errString("Digest does not match the body")
	}
	if r.Header.Get("Host") == "" {
		r.Header.Set("Host", r.Host) // net/http keeps Host outside the header map
	}
	v, err := httpsig.NewVerifier(r)
	if err != nil {
		return err
	}
	return v.Verify(pub, httpsig.Algorithm(params["algorithm"]))
}

func TestInteropRFC9421(t *testing.T) {
	p := getPKI(t)
	for _, k := range []struct {
		name string
		key  *tls.Certificate
		alg  string
	}{
		{"rsa-pss-sha512", p.rsa, "rsa-pss-sha512"},
		{"rsa-v1_5-sha256", p.rsa, "rsa-v1_5-sha256"},
		{"ecdsa-p256-sha256", p.ecdsa, "ecdsa-p256-sha256"},
		{"ed25519", p.ed25519, "ed25519"},
	} {
		for _, tc := range interopCases {
			t.Run(k.name+"/"+tc.name, func(t *testing.T) {
				opts := Options{Profile: ProfileRFC9421, Algorithm: k.alg, KeyID: "{certificate_sha256}",
					OptionalHeaders: []string{"psu-id", "content-length"}, Expires: time.Minute, Tag: "tokenproxy"}
				s, err := New(opts, StaticKey{k.key})
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				c := roundTrip(t, s, tc.method, "/v1/accounts/a%20b?withBalance=true", tc.body, tc.hdr)
				sum := sha256.Sum256(k.key.Leaf.Raw)
				keyID := base64Hex(sum[:])
				if err := verify9421(c, k.key.Leaf.PublicKey, k.alg, keyID, tc.mustCover); err != nil {
					t.Fatalf("verification failed: %v\nSignature-Input: %s", err, c.req.Header.Get("Signature-Input"))
				}
				r, b := c.clone()
				if verify9421(captured{req: r, body: append(b, ' ')}, k.key.Leaf.PublicKey, k.alg, keyID, nil) == nil {
					t.Error("tampered body still verifies")
				}
				r, b = c.clone()
				r.Header.Set("X-Request-ID", "00000000-0000-4000-8000-000000000000")
				if verify9421(captured{req: r, body: b}, k.key.Leaf.PublicKey, k.alg, keyID, nil) == nil {
					t.Error("tampered header still verifies")
				}
			})
		}
	}
}

func base64Hex(b []byte) string {
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

// verify9421 checks a received request with yaronf/httpsign, including its Content-Digest.
func verify9421(c captured, pub crypto.PublicKey, alg, keyID string, mustCover []string) error {
	r, _ := c.clone()
	rc := r.Body
	if err := httpsign.ValidateContentDigestHeader(r.Header.Values("Content-Digest"), &rc, []string{"sha-256"}); err != nil {
		return err
	}
	fields := httpsign.Headers("@method", "@authority", "@path", "@query", "content-digest", "date", "x-request-id")
	for _, h := range mustCover {
		fields.AddHeader(h)
	}
	cfg := httpsign.NewVerifyConfig().SetKeyID(keyID).SetAllowedAlgs([]string{alg})
	var v *httpsign.Verifier
	var err error
	switch alg {
	case "rsa-pss-sha512":
		v, err = httpsign.NewRSAPSSVerifier(*pub.(*rsa.PublicKey), cfg, fields)
	case "rsa-v1_5-sha256":
		v, err = httpsign.NewRSAVerifier(*pub.(*rsa.PublicKey), cfg, fields)
	case "ecdsa-p256-sha256":
		v, err = httpsign.NewP256Verifier(*pub.(*ecdsa.PublicKey), cfg, fields)
	case "ed25519":
		v, err = httpsign.NewEd25519Verifier(pub.(ed25519.PublicKey), cfg, fields)
	}
	if err != nil {
		return err
	}
	return httpsign.VerifyRequest("sig1", *v, r)
}
