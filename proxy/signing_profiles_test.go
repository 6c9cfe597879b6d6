package proxy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-fed/httpsig"
	"github.com/yaronf/httpsign"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// capture records the requests an upstream received, body included.
type capture struct {
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Clone(context.Background()))
	c.body = append(c.body, b)
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (c *capture) at(i int) (*http.Request, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.reqs[i].Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(c.body[i]))
	return r, c.body[i]
}

var profileCases = []struct {
	name, method, body string
	hdr                map[string]string
}{
	{"POST with a JSON body", "POST", `{"instructedAmount":{"currency":"EUR","amount":"12.30"}}`, map[string]string{"Content-Type": "application/json"}},
	{"GET without a body", "GET", "", nil},
	{"psu-* headers", "GET", "", map[string]string{"PSU-ID": "PSU-1", "PSU-IP-Address": "192.0.2.1"}},
	{"non-ASCII header value", "GET", "", map[string]string{"PSU-ID": "Bjørn Ærø"}},
}

// Requests that tokenproxy signed with the custom and rfc9421 profiles, as
// the upstream received them, verify with implementations we did not write
// (go-fed/httpsig, yaronf/httpsign); a tampered copy does not.
func TestCustomAndRFC9421ProfilesThroughProxy(t *testing.T) {
	ca, _ := pki.NewCA("profiles CA")
	dir := t.TempDir()
	qwac, _ := ca.IssueClient("qwac")
	rsaKey, _ := ca.IssueClient("rsa seal", pki.WithKeyType(pki.RSA2048))
	ecKey, _ := ca.IssueClient("ec seal")
	qf, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	rf, _ := pki.WriteFiles(dir, "rsa", rsaKey, "x")
	ef, _ := pki.WriteFiles(dir, "ec", ecKey, "x")
	caFile := filepath.Join(dir, "ca.pem")
	_ = ca.WriteCertFile(caFile)
	customUp, rfcUp := &capture{}, &capture{}
	cu := mtlsUpstream(t, ca, customUp)
	ru := mtlsUpstream(t, ca, rfcUp)
	yaml := fmt.Sprintf(`
listen: {proxy: 127.0.0.1:0, admin: 'off'}
routes:
  - name: custom
    hosts: [custom.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: custom
      algorithm: rsa-sha512
      digest: SHA-512
      key_id: "tpp-{serial_decimal}"
      headers: ["(request-target)", host, date, digest, x-request-id]
      optional_headers: ["psu-*"]
      key: {pem: {cert_file: %s, key_file: %s}}
  - name: modern
    hosts: [modern.bank.example]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate: {pem: {cert_file: %s, key_file: %s}}
    signing:
      profile: rfc9421
      algorithm: ecdsa-p256-sha256
      key_id: modern-key-1
      key: {pem: {cert_file: %s, key_file: %s}}
`, cu.URL, caFile, qf.Cert, qf.Key, rf.Cert, rf.Key, ru.URL, caFile, qf.Cert, qf.Key, ef.Cert, ef.Key)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testlog.New(t)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}}
	send := func(host string, i int) {
		tc := profileCases[i]
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		req, _ := http.NewRequest(tc.method, "http://"+host+"/v1/payments?mode=sepa", body)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("%s: %d %s", host, resp.StatusCode, resp.Header.Get(proxy.HeaderError))
		}
	}

	for i, tc := range profileCases {
		t.Run("custom/"+tc.name, func(t *testing.T) {
			send("custom.bank.example", i)
			verify := func(r *http.Request, body []byte) error {
				sum := sha512.Sum512(body)
				if got := r.Header.Get("Digest"); got != "SHA-512="+base64.StdEncoding.EncodeToString(sum[:]) {
					return fmt.Errorf("digest %q does not match the body", got)
				}
				if !strings.Contains(r.Header.Get("Signature"), `keyId="tpp-`+rsaKey.Leaf.SerialNumber.String()+`"`) {
					return fmt.Errorf("keyId in %q", r.Header.Get("Signature"))
				}
				r.Header.Set("Host", r.Host)
				v, err := httpsig.NewVerifier(r)
				if err != nil {
					return err
				}
				return v.Verify(rsaKey.Leaf.PublicKey.(*rsa.PublicKey), httpsig.RSA_SHA512)
			}
			r, b := customUp.at(i)
			if err := verify(r, b); err != nil {
				t.Fatalf("go-fed/httpsig: %v\nSignature: %s", err, r.Header.Get("Signature"))
			}
			r, _ = customUp.at(i)
			r.Header.Set("X-Request-ID", "00000000-0000-4000-8000-000000000000")
			if verify(r, b) == nil {
				t.Fatal("a tampered header still verifies")
			}
		})
		t.Run("rfc9421/"+tc.name, func(t *testing.T) {
			send("modern.bank.example", i)
			verify := func(r *http.Request) error {
				rc := r.Body
				if err := httpsign.ValidateContentDigestHeader(r.Header.Values("Content-Digest"), &rc, []string{"sha-256"}); err != nil {
					return err
				}
				r.Body = rc
				fields := httpsign.Headers("@method", "@authority", "@path", "@query", "content-digest", "date", "x-request-id")
				vc := httpsign.NewVerifyConfig().SetKeyID("modern-key-1").SetAllowedAlgs([]string{"ecdsa-p256-sha256"})
				v, err := httpsign.NewP256Verifier(*ecKey.Leaf.PublicKey.(*ecdsa.PublicKey), vc, fields)
				if err != nil {
					return err
				}
				return httpsign.VerifyRequest("sig1", *v, r)
			}
			r, _ := rfcUp.at(i)
			if err := verify(r); err != nil {
				t.Fatalf("yaronf/httpsign: %v\nSignature-Input: %s", err, r.Header.Get("Signature-Input"))
			}
			r, b := rfcUp.at(i)
			r.Body = io.NopCloser(bytes.NewReader(append(b, ' ')))
			if verify(r) == nil {
				t.Fatal("a tampered body still verifies")
			}
		})
	}
}
