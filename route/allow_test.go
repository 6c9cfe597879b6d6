package route

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenproxy/tokenproxy/callercert"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

func TestAllowIdentifiesCallers(t *testing.T) {
	ca, _ := pki.NewCA("callers")
	cert := func(cn string) *tls.ConnectionState {
		c, err := ca.IssueClient(cn)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c.Leaf}}}
	}
	m, err := callercert.NewMapper([]callercert.Caller{{Name: "payments", Certificate: callercert.Match{Subject: "payments-svc"}},
		{Name: "ledger", Certificate: callercert.Match{Subject: "ledger-svc"}}})
	if err != nil {
		t.Fatal(err)
	}
	all := Callers{}
	all.Add("batch", "pw")
	p := NewAllowPolicy("bank", nil, []string{"payments", "batch"}, all, m)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("batch:pw"))
	tests := []struct {
		name     string
		tunnel   string
		tls      *tls.ConnectionState
		auth     string
		caller   string
		status   int
		denyCode string
	}{
		{"tunnel caller", "payments", nil, "", "payments", 0, ""},
		{"tunnel caller not on the route", "ledger", nil, "", "", 403, CodeCallerNotAllowed},
		{"certificate", "", cert("payments-svc"), "", "payments", 0, ""},
		{"certificate of a caller not on the route", "", cert("ledger-svc"), basic, "", 403, CodeCallerNotAllowed},
		{"unknown certificate, even with a password", "", cert("stranger"), basic, "", 403, CodeCallerNotAllowed},
		{"password without certificate", "", nil, basic, "batch", 0, ""},
		{"nothing", "", nil, "", "", 407, CodeCallerAuthRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://bank.example/", nil)
			if tc.tunnel != "" {
				req = req.WithContext(WithTunnelCaller(req.Context(), tc.tunnel))
			}
			req.TLS = tc.tls
			if tc.auth != "" {
				req.Header.Set("Proxy-Authorization", tc.auth)
			}
			name, d := p.check(req)
			switch {
			case tc.status == 0 && (d != nil || name != tc.caller):
				t.Fatalf("got %q %v, want %q", name, d, tc.caller)
			case tc.status != 0 && (d == nil || d.Status != tc.status || d.Code != tc.denyCode):
				t.Fatalf("got %q %+v, want %d %s", name, d, tc.status, tc.denyCode)
			}
		})
	}
}
