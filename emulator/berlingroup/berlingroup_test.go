package berlingroup

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/internal/emutest"
	"github.com/tokenproxy/tokenproxy/emulator/internal/psd2sig"
	"github.com/tokenproxy/tokenproxy/signer"
)

const path = "/v1/sandbox/accounts/" + DefaultMockAccountID

// send signs a request with the berlin-group profile, lets mutate alter it after signing, and sends it.
func send(t *testing.T, client *http.Client, url string, key *tls.Certificate, body []byte, hdr map[string]string,
	mutate func(*http.Request, *[]byte)) (int, []byte) {
	t.Helper()
	s, err := signer.New(signer.Options{Profile: signer.ProfileBerlinGroup}, signer.StaticKey{Cert: key})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
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
	return resp.StatusCode, b
}

func TestAccepted(t *testing.T) {
	p := emutest.NewPKI(t)
	h := New(Config{Roots: p.Roots})
	srv, client := emutest.StartMTLS(t, p, h)
	for _, hdr := range []map[string]string{
		nil,
		{"PSU-ID": "Jörg Ødegård", "PSU-Corporate-ID": "corp", "TPP-Redirect-URI": "https://tpp.example/cb"},
	} {
		status, body := send(t, client, srv.URL, p.QSealC, nil, hdr, nil)
		if status != http.StatusOK {
			t.Fatalf("status %d: %s", status, body)
		}
		var accounts []Account
		if err := json.Unmarshal(body, &accounts); err != nil || len(accounts) != 1 || accounts[0].ID != DefaultMockAccountID ||
			accounts[0].Links.Self.Href != path || len(accounts[0].Balances) != 2 {
			t.Fatalf("body %s (%v)", body, err)
		}
	}
	if a, r, _ := h.Counts(); a != 2 || r != 0 {
		t.Fatalf("counts accepted=%d rejected=%d", a, r)
	}
}

func TestRejected(t *testing.T) {
	p := emutest.NewPKI(t)
	for _, tc := range []struct {
		name   string
		body   []byte
		hdr    map[string]string
		mutate func(*http.Request, *[]byte)
		cfg    Config
		reason string
	}{
		{name: "no X-Request-ID", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("X-Request-ID") }, reason: psd2sig.ReasonRequestID},
		{name: "no certificate header", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("TPP-Signature-Certificate") }, reason: psd2sig.ReasonCertMissing},
		{name: "certificate not base64", mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("TPP-Signature-Certificate", "%%%") }, reason: psd2sig.ReasonCertInvalid},
		{name: "certificate not trusted", cfg: Config{Roots: emptyPool()}, reason: psd2sig.ReasonCertInvalid},
		{name: "other certificate", mutate: func(r *http.Request, _ *[]byte) {
			r.Header.Set("TPP-Signature-Certificate", base64.StdEncoding.EncodeToString(p.OtherQSealC.Leaf.Raw))
		}, reason: psd2sig.ReasonKeyID},
		{name: "no signature", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("Signature") }, reason: psd2sig.ReasonSignatureMissing},
		{name: "keyId with the wrong CA", mutate: func(r *http.Request, _ *[]byte) {
			r.Header.Set("Signature", strings.Replace(r.Header.Get("Signature"), "CA=O=PSDNO-FSA-ABCA", "CA=O=Other", 1))
		}, reason: psd2sig.ReasonKeyID},
		{name: "keyId in certificate DN order", cfg: Config{DNOrder: signer.DNOrderCertificate}, reason: psd2sig.ReasonKeyID},
		{name: "psu-id added after signing", mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("PSU-ID", "PSU-1") }, reason: psd2sig.ReasonNotCovered},
		{name: "no digest", mutate: func(r *http.Request, _ *[]byte) { r.Header.Del("Digest") }, reason: psd2sig.ReasonDigestMissing},
		{name: "body tampered", body: []byte(`{"a":1}`), mutate: func(_ *http.Request, b *[]byte) { *b = []byte(`{"a":2}`) }, reason: psd2sig.ReasonDigestMismatch},
		{name: "header tampered", hdr: map[string]string{"PSU-ID": "PSU-1"}, mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("PSU-ID", "PSU-2") }, reason: psd2sig.ReasonSignatureInvalid},
		{name: "request id tampered", mutate: func(r *http.Request, _ *[]byte) { r.Header.Set("X-Request-ID", "4eba4445-1a4b-47b8-bdd5-4e56ef026b19") }, reason: psd2sig.ReasonSignatureInvalid},
		{name: "stale date", mutate: func(r *http.Request, _ *[]byte) {
			r.Header.Set("Date", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat))
		}, reason: psd2sig.ReasonDate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := New(tc.cfg)
			srv, client := emutest.StartMTLS(t, p, h)
			status, body := send(t, client, srv.URL, p.QSealC, tc.body, tc.hdr, tc.mutate)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d: %s", status, body)
			}
			var msg struct {
				TPPMessages []struct{ Category, Code, Text string } `json:"tppMessages"`
				Reason      string                                  `json:"reason"`
			}
			if err := json.Unmarshal(body, &msg); err != nil || msg.Reason != tc.reason || len(msg.TPPMessages) != 1 || msg.TPPMessages[0].Text == "" {
				t.Fatalf("body %s, want reason %s", body, tc.reason)
			}
			rec := h.Received()
			if a, r, by := h.Counts(); a != 0 || r != 1 || by[tc.reason] != 1 || len(rec) != 1 || rec[0].Accepted {
				t.Fatalf("counts %d %d %v, received %+v", a, r, by, rec)
			}
		})
	}
}

func TestUnknownAccount(t *testing.T) {
	p := emutest.NewPKI(t)
	h := New(Config{})
	srv, client := emutest.StartMTLS(t, p, h)
	s, _ := signer.New(signer.Options{Profile: signer.ProfileBerlinGroup}, signer.StaticKey{Cert: p.QSealC})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/sandbox/accounts/nope", nil)
	if err := s.Sign(req, nil); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func emptyPool() *x509.CertPool { return x509.NewCertPool() }
