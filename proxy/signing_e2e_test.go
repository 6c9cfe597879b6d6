package proxy_test

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/emulator/berlingroup"
	"github.com/tokenproxy/tokenproxy/emulator/stet"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

// mtlsUpstream serves h over TLS, requiring a client certificate from ca.
func mtlsUpstream(t testing.TB, ca *pki.CA, h http.Handler) *httptest.Server {
	t.Helper()
	sc, err := ca.IssueServer([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*sc}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.CertPool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Requests signed by tokenproxy, on the wire, are accepted by the Berlin
// Group and STET emulators, which verify them with go-fed/httpsig and check
// Digest, keyId, the certificate header and the required headers.
var bgAccount = "http://psd2.bank.example/v1/sandbox/accounts/" + berlingroup.DefaultMockAccountID

func TestSignedRequestsThroughProxy(t *testing.T) {
	ca, err := pki.NewCA("PSD2 test QTSP")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	qwac, _ := ca.IssueClient("TPP QWAC")
	qseal, err := ca.IssueClient("TPP QSealC", pki.WithKeyType(pki.RSA2048))
	if err != nil {
		t.Fatal(err)
	}
	qwacFiles, _ := pki.WriteFiles(dir, "qwac", qwac, "x")
	sealFiles, _ := pki.WriteFiles(dir, "qseal", qseal, "x")
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	const stetKeyID = "https://tpp.example/certs/qsealc.pem"
	bg := berlingroup.New(berlingroup.Config{Roots: ca.CertPool()})
	st := stet.New(stet.Config{Keys: map[string]crypto.PublicKey{stetKeyID: qseal.Leaf.PublicKey}})
	bgSrv := mtlsUpstream(t, ca, bg)
	stSrv := mtlsUpstream(t, ca, st)

	routeYAML := func(name, host, upstream, signing string) string {
		return fmt.Sprintf(`
  - name: %s
    hosts: [%s]
    upstream: %s
    tls: {ca_file: %s}
    client_certificate:
      pem: {cert_file: %s, key_file: %s}
    signing:
%s
      key:
        pem: {cert_file: %s, key_file: %s}
`, name, host, upstream, caFile, qwacFiles.Cert, qwacFiles.Key, signing, sealFiles.Cert, sealFiles.Key)
	}
	yaml := "listen: {proxy: 127.0.0.1:0, admin: 'off'}\nroutes:" +
		routeYAML("bg", "psd2.bank.example", bgSrv.URL, "      profile: berlin-group") +
		routeYAML("stet", "api.stet.example", stSrv.URL, "      profile: stet\n      key_id: "+stetKeyID)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	log, logs := testlog.New(t)
	srv := serve(t, cfg, assemble.Options{}, proxy.Options{Log: log})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: srv.Addr("proxy")})}}

	tests := []struct {
		name, method, url, body string
		headers                 map[string]string
	}{
		{"berlin-group GET", "GET", bgAccount, "", nil},
		{"berlin-group with psu-* and a redirect URI", "GET", bgAccount, "",
			map[string]string{"PSU-ID": "PSU-1234", "PSU-Corporate-ID": "ACME", "TPP-Redirect-URI": "https://tpp.example/cb"}},
		{"berlin-group non-ASCII header value", "GET", bgAccount, "",
			map[string]string{"PSU-Corporate-ID": "Société Générale Ørsted"}},
		{"berlin-group app-sent signature headers are replaced", "GET", bgAccount, "",
			map[string]string{"Signature": "forged", "Digest": "SHA-256=forged", "TPP-Signature-Certificate": "forged"}},
		{"stet GET", "GET", "http://api.stet.example/stet/psd2/v1/accounts", "", map[string]string{"PSU-IP-Address": "192.0.2.1"}},
		{"stet PUT with a JSON body", "PUT", "http://api.stet.example/stet/psd2/v1/consents",
			`{"balances":[{"iban":"FR7612345987650123456789014"}],"psuIdentity":true}`, map[string]string{"Content-Type": "application/json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			if tc.body == "" {
				req.Body = nil
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
		})
	}
	if acc, rej, why := bg.Counts(); acc != 4 || rej != 0 {
		t.Fatalf("berlin group accepted %d, rejected %d: %v", acc, rej, why)
	}
	if acc, rej, why := st.Counts(); acc != 2 || rej != 0 {
		t.Fatalf("stet accepted %d, rejected %d: %v", acc, rej, why)
	}
	// The X-Request-ID tokenproxy generated is the one in its log line.
	for _, r := range bg.Received() {
		id := r.Header.Get("X-Request-ID")
		if id == "" || logs.Count(`"request_id":"`+id+`"`) != 1 {
			t.Fatalf("request id %q not in exactly one log line", id)
		}
	}
}
