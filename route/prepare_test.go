package route

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

func TestRemoveHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection":          {"keep-alive, X-Hop"},
		"X-Hop":               {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Authorization": {"Basic YTpi"},
		"Proxy-Connection":    {"keep-alive"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-Sum"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"X-End-To-End":        {"kept"},
	}
	RemoveHopHeaders(h)
	if want := (http.Header{"X-End-To-End": {"kept"}}); !reflect.DeepEqual(h, want) {
		t.Fatalf("after removal %v; want %v", h, want)
	}
}

func TestJoinPath(t *testing.T) {
	for _, tc := range []struct {
		base, req     string
		path, rawPath string
	}{
		{"https://api.example", "/v1/accounts", "/v1/accounts", ""},
		{"https://api.example/", "/v1/accounts", "/v1/accounts", ""},
		{"https://api.example/api", "/v1/accounts", "/api/v1/accounts", ""},
		{"https://api.example/api/", "/v1/accounts", "/api/v1/accounts", ""},
		{"https://api.example/api", "/a%2Fb", "/api/a/b", "/api/a%2Fb"},
		{"https://api.example/my%20api", "/a%2Fb", "/my api/a/b", "/my%20api/a%2Fb"},
	} {
		t.Run(tc.base+tc.req, func(t *testing.T) {
			base, _ := url.Parse(tc.base)
			req, _ := url.Parse("http://app" + tc.req)
			path, raw := joinPath(base, req)
			if path != tc.path || raw != tc.rawPath {
				t.Fatalf("joinPath = %q, %q; want %q, %q", path, raw, tc.path, tc.rawPath)
			}
		})
	}
}

// What the app sends that belongs to tokenproxy or to the hop never reaches
// the upstream: Proxy-Authorization (the gateway caller's credentials),
// hop-by-hop headers, the route's owned headers (its token's Authorization,
// its signature headers); the token and the app's own headers do.
func TestPrepareHeaderHygiene(t *testing.T) {
	up, _ := url.Parse("https://bank.example/api")
	owned := []string{"Authorization", "Digest", "Signature", "Tpp-Signature-Certificate"}
	for _, tc := range []struct {
		name     string
		owned    []string
		tok      *tokencache.Token
		wantAuth []string
	}{
		{name: "token route", owned: owned, tok: &tokencache.Token{Header: "Bearer issued"}, wantAuth: []string{"Bearer issued"}},
		{name: "token route, no token yet", owned: owned, wantAuth: nil},
		{name: "route without token", wantAuth: []string{"Bearer app-own"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Route{Name: "r", Upstream: up, owned: tc.owned}
			in := httptest.NewRequest(http.MethodPost, "http://bank.example/v1/pay?x=1", strings.NewReader("{}"))
			in.Header.Set("Authorization", "Bearer app-own")
			in.Header.Set("Proxy-Authorization", "Basic YXBwOnNlY3JldA==")
			in.Header.Set("Connection", "X-Caller")
			in.Header.Set("X-Caller", "payments")
			in.Header.Set("Signature", "forged")
			in.Header.Set("Digest", "SHA-256=forged")
			in.Header.Set("TPP-Signature-Certificate", "forged")
			in.Header.Set("X-Request-Id", "req-1")
			out, err := r.Prepare(in, []byte("{}"), tc.tok)
			if err != nil {
				t.Fatal(err)
			}
			if got := out.Header.Values("Authorization"); !reflect.DeepEqual(got, tc.wantAuth) {
				t.Fatalf("Authorization %q; want %q", got, tc.wantAuth)
			}
			for _, k := range []string{"Proxy-Authorization", "Connection", "X-Caller"} {
				if v := out.Header.Values(k); v != nil {
					t.Fatalf("%s reached the upstream: %q", k, v)
				}
			}
			for _, k := range tc.owned {
				if v := out.Header.Values(k); k != "Authorization" && v != nil {
					t.Fatalf("owned header %s kept the app's value %q", k, v)
				}
			}
			if got := out.Header.Get("X-Request-Id"); got != "req-1" {
				t.Fatalf("X-Request-Id %q; the app's end-to-end header must pass", got)
			}
			if out.URL.String() != "https://bank.example/api/v1/pay?x=1" || out.Host != "bank.example" || out.ContentLength != 2 {
				t.Fatalf("request to %s (host %s, length %d)", out.URL, out.Host, out.ContentLength)
			}
		})
	}
}
