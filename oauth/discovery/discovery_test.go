package discovery

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

func TestURLs(t *testing.T) {
	for _, tc := range []struct {
		issuer string
		want   []string
	}{
		{"https://as.example", []string{"https://as.example/.well-known/oauth-authorization-server", "https://as.example/.well-known/openid-configuration"}},
		{"https://as.example/", []string{"https://as.example/.well-known/oauth-authorization-server", "https://as.example/.well-known/openid-configuration"}},
		{"https://as.example/realms/psd2", []string{"https://as.example/.well-known/oauth-authorization-server/realms/psd2",
			"https://as.example/realms/psd2/.well-known/oauth-authorization-server", "https://as.example/realms/psd2/.well-known/openid-configuration"}},
	} {
		got, err := URLs(tc.issuer)
		if err != nil || strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("URLs(%q) = %v, %v; want %v", tc.issuer, got, err, tc.want)
		}
	}
	for _, bad := range []string{"http://as.example", "as.example", "https://as.example?x=1", ""} {
		if _, err := URLs(bad); err == nil {
			t.Errorf("URLs(%q) accepted", bad)
		}
	}
}

func TestParse(t *testing.T) {
	const iss = "https://as.example"
	for _, tc := range []struct {
		name, doc, err string
	}{
		{"ok", `{"issuer":"https://as.example","token_endpoint":"https://as.example/token","mtls_endpoint_aliases":{"token_endpoint":"https://mtls.as.example/token"}}`, ""},
		{"other issuer", `{"issuer":"https://evil.example","token_endpoint":"https://as.example/token"}`, `names issuer "https://evil.example"`},
		{"trailing slash differs", `{"issuer":"https://as.example/"}`, "not the configured"},
		{"no issuer", `{"token_endpoint":"https://as.example/token"}`, "has no issuer"},
		{"http endpoint", `{"issuer":"https://as.example","token_endpoint":"http://as.example/token"}`, "token_endpoint is not an absolute https URL"},
		{"http alias", `{"issuer":"https://as.example","mtls_endpoint_aliases":{"token_endpoint":"http://x"}}`, "mtls_endpoint_aliases.token_endpoint"},
		{"not json", `<html>`, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc), iss)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m.Endpoint(Token, true) != "https://mtls.as.example/token" || m.Endpoint(Token, false) != "https://as.example/token" {
					t.Fatalf("endpoints: %q %q", m.Endpoint(Token, true), m.Endpoint(Token, false))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// FuzzParse: no document is accepted under another issuer or with a
// non-https endpoint, and no error quotes more than the issuer it names.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"issuer":"https://as.example","token_endpoint":"https://as.example/token","pushed_authorization_request_endpoint":"https://as.example/par","require_pushed_authorization_requests":true}`))
	f.Add([]byte(`{"issuer":"https://as.example","mtls_endpoint_aliases":{"token_endpoint":"https://m.as.example/t"}}`))
	f.Add([]byte(`{"issuer":"https://as.example/","token_endpoint":"javascript:alert(1)"}`))
	f.Add([]byte(`{"issuer":1}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		const iss = "https://as.example"
		m, err := Parse(doc, iss)
		if err != nil {
			if len(doc) > 200 && strings.Contains(err.Error(), string(doc)) {
				t.Fatalf("the error quotes the document: %v", err)
			}
			return
		}
		if m.Issuer != iss {
			t.Fatalf("accepted issuer %q", m.Issuer)
		}
		for _, n := range []string{Authorization, Token, PAR, Revocation} {
			for _, mtls := range []bool{false, true} {
				if e := m.Endpoint(n, mtls); e != "" && !httpsURL(e) {
					t.Fatalf("accepted %s %q", n, e)
				}
			}
		}
	})
}

// testAS serves metadata over real TLS; doc is what the well-known path answers.
func testAS(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *http.Client) {
	t.Helper()
	ca, err := pki.NewCA("discovery test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}}}
	t.Cleanup(hc.CloseIdleConnections)
	return srv, hc
}

func TestFetchFallsBackToOpenIDConfiguration(t *testing.T) {
	var issuer string
	srv, hc := testAS(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "token_endpoint": issuer + "/token"})
	})
	issuer = srv.URL
	m, err := Fetch(context.Background(), hc, issuer)
	if err != nil {
		t.Fatal(err)
	}
	if m.URL != issuer+"/.well-known/openid-configuration" || m.TokenEndpoint != issuer+"/token" {
		t.Fatalf("got %+v", m)
	}
}

func TestFetchRefusesAnotherIssuer(t *testing.T) {
	srv, hc := testAS(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"issuer":"https://evil.example"}`))
	})
	_, err := Fetch(context.Background(), hc, srv.URL)
	if err == nil || !strings.Contains(err.Error(), `names issuer "https://evil.example"`) {
		t.Fatalf("err = %v", err)
	}
}

// A failed refresh keeps the last good document.
func TestRefreshKeepsLastGood(t *testing.T) {
	var broken atomic.Bool
	var issuer string
	srv, hc := testAS(t, func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			_, _ = w.Write([]byte(`{"issuer":"https://other.example"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "token_endpoint": issuer + "/token"})
	})
	issuer = srv.URL
	s, err := Open(context.Background(), hc, issuer)
	if err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	if err := s.Refresh(context.Background()); err == nil {
		t.Fatal("a document for another issuer was accepted")
	}
	if got := s.Current().TokenEndpoint; got != issuer+"/token" {
		t.Fatalf("token endpoint after a failed refresh: %q", got)
	}
}
