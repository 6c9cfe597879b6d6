package stet

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/tokenproxy/tokenproxy/emulator/internal/emutest"
	"github.com/tokenproxy/tokenproxy/emulator/internal/psd2sig"
	"github.com/tokenproxy/tokenproxy/signer"
)

const keyURL = "https://tpp.example/qsealc.pem"

func trust(p *emutest.PKI) map[string]crypto.PublicKey {
	return map[string]crypto.PublicKey{
		keyURL: p.QSealC.Leaf.PublicKey,
		base64.StdEncoding.EncodeToString(p.QSealC.Leaf.RawSubjectPublicKeyInfo): p.QSealC.Leaf.PublicKey,
	}
}

// send signs a request with opts, lets mutate alter it after signing, and sends it.
func send(t *testing.T, client *http.Client, method, url string, opts signer.Options, key *tls.Certificate, body []byte,
	hdr map[string]string, mutate func(*http.Request, *[]byte)) (*http.Response, []byte) {
	t.Helper()
	s, err := signer.New(opts, signer.StaticKey{Cert: key})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer KXZyspFBZ1R6NqWQdmsZhfdo1nbjK7MoI0Kr2rSi1mSCFNehAs6iLw")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if err := s.Sign(req, body); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(req, &body)
	}
	if len(body) > 0 {
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

var consentBody = []byte(`{"balances":[{"iban":"FR7613807008043001965405158"}],"transactions":[{"iban":"FR7613807008043001965405158"}],"trustedBeneficiaries":true,"psuIdentity":true}`)

func TestAccepted(t *testing.T) {
	p := emutest.NewPKI(t)
	h := New(Config{Keys: trust(p)})
	srv, client := emutest.StartMTLS(t, p, h)
	psu := map[string]string{"PSU-IP-Address": "192.168.0.1", "PSU-IP-Port": "443", "PSU-User-Agent": "Mozilla/5.0 (Ångström)",
		"Content-Type": "application/json"}
	for _, keyID := range []string{keyURL, "{public_key}"} {
		opts := signer.Options{Profile: signer.ProfileSTET, KeyID: keyID}
		resp, body := send(t, client, http.MethodGet, srv.URL+"/stet/psd2/v1/accounts", opts, p.QSealC, nil, psu, nil) //nolint:bodyclose // send reads and closes the body
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Request-ID") == "" {
			t.Fatalf("GET accounts: %d %s", resp.StatusCode, body)
		}
		var accounts struct {
			Accounts []struct {
				ResourceID string                `json:"resourceId"`
				AccountID  struct{ IBAN string } `json:"accountId"`
			} `json:"accounts"`
			ConnectedPSU string `json:"connectedPsu"`
		}
		if err := json.Unmarshal(body, &accounts); err != nil || len(accounts.Accounts) != 3 || accounts.ConnectedPSU != "MALLOW MARC" {
			t.Fatalf("accounts body: %v %s", err, body)
		}
		resp, body = send(t, client, http.MethodPut, srv.URL+"/stet/psd2/v1/consents", opts, p.QSealC, consentBody, psu, nil) //nolint:bodyclose // send reads and closes the body
		if resp.StatusCode != http.StatusCreated || len(body) != 0 {
			t.Fatalf("PUT consents: %d %s", resp.StatusCode, body)
		}
	}
	if c := h.Consents(); len(c) != 2 || !c[0].PSUIdentity || c[0].Balances[0].IBAN != "FR7613807008043001965405158" {
		t.Fatalf("consents %+v", c)
	}
	if a, r, _ := h.Counts(); a != 4 || r != 0 {
		t.Fatalf("counts accepted=%d rejected=%d", a, r)
	}
}

func TestRejected(t *testing.T) {
	p := emutest.NewPKI(t)
	stet := signer.Options{Profile: signer.ProfileSTET, KeyID: keyURL}
	for _, tc := range []struct {
		name   string
		opts   signer.Options
		key    *tls.Certificate
		hdr    map[string]string
		mutate func(*http.Request, *[]byte)
		reason string
	}{
		{name: "no X-Request-ID", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("X-Request-ID") }, reason: psd2sig.ReasonRequestID},
		{name: "no signature", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("Signature") }, reason: psd2sig.ReasonSignatureMissing},
		{name: "unknown keyId", opts: signer.Options{Profile: signer.ProfileSTET, KeyID: "https://tpp.example/other.pem"}, reason: psd2sig.ReasonKeyUnknown},
		{name: "request-target not covered", opts: signer.Options{Profile: signer.ProfileCustom, KeyID: keyURL,
			Headers: []string{"date", "digest", "x-request-id"}}, reason: psd2sig.ReasonNotCovered},
		{name: "psu header added after signing", mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("PSU-IP-Address", "10.0.0.1") }, reason: psd2sig.ReasonNotCovered},
		{name: "body tampered", mutate: func(_ *http.Request, b *[]byte) { *b = bytes.Replace(*b, []byte("true"), []byte("false"), 1) }, reason: psd2sig.ReasonDigestMismatch},
		{name: "header tampered", hdr: map[string]string{"PSU-IP-Address": "192.168.0.1"},
			mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("PSU-IP-Address", "10.0.0.1") }, reason: psd2sig.ReasonSignatureInvalid},
		{name: "signed by another key", key: p.OtherQSealC, reason: psd2sig.ReasonSignatureInvalid},
		{name: "malformed signature", mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("Signature", `keyId=`) }, reason: psd2sig.ReasonSignatureMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Config{Keys: trust(p)})
			srv, client := emutest.StartMTLS(t, p, h)
			opts, key := tc.opts, tc.key
			if opts.Profile == "" {
				opts = stet
			}
			if key == nil {
				key = p.QSealC
			}
			body := append([]byte(nil), consentBody...)
			resp, b := send(t, client, http.MethodPut, srv.URL+"/stet/psd2/v1/consents", opts, key, body, tc.hdr, tc.mutate) //nolint:bodyclose // send reads and closes the body
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			var e struct {
				Status  int    `json:"status"`
				Message string `json:"message"`
				Reason  string `json:"reason"`
			}
			if err := json.Unmarshal(b, &e); err != nil || e.Status != 401 || e.Reason != tc.reason || e.Message == "" {
				t.Fatalf("body %s, want reason %s", b, tc.reason)
			}
			if a, r, by := h.Counts(); a != 0 || r != 1 || by[tc.reason] != 1 || len(h.Consents()) != 0 {
				t.Fatalf("counts %d %d %v", a, r, by)
			}
		})
	}
}
