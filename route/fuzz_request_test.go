package route

import (
	"bufio"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
)

// FuzzOutgoing drives the request path from the listener to the upstream:
// raw bytes as an app sent them are parsed the way net/http's server parses
// them, then Prepare builds what would be sent upstream. Whatever the app
// sent, the upstream request goes over https to the route's host, carries no
// hop-by-hop header (nor one the app's Connection header named), none of the
// headers tokenproxy owns on the route, no app Authorization on a token
// route, and no userinfo.
func FuzzOutgoing(f *testing.F) {
	for _, seed := range []string{
		"GET http://sandbox.bankingcircleconnect.com/api/v1/accounts HTTP/1.1\r\nHost: sandbox.bankingcircleconnect.com\r\n\r\n",
		"POST http://a.example/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET http://a.example/x HTTP/1.1\r\nHost: evil.example\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTe: trailers\r\nUpgrade: h2c\r\n\r\n",
		"GET http://user:pw@a.example/x HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer app\r\nProxy-Authorization: Basic eA==\r\n\r\n",
		"GET /api/v1/accounts?PageSize=1 HTTP/1.0\r\nSignature: keyId=\"x\"\r\nDigest: SHA-256=x\r\nTPP-Signature-Certificate: x\r\n\r\n",
		"GET http://[::1]:8080/%2e%2e/%2F HTTP/1.1\r\nHost: [::1]:8080\r\nX-Note: one\r\n  two\r\n\r\n",
		"GET http://a.example//..//x?a=%00 HTTP/1.1\r\nHost: a.example\r\nContent-Digest: x\r\nSignature-Input: x\r\n\r\n",
	} {
		f.Add(seed, "/base", true)
		f.Add(seed, "", false)
	}
	f.Fuzz(func(t *testing.T, raw, basePath string, withToken bool) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 itself; nothing reaches the pipeline
		}
		base, err := url.Parse("https://bank.example:8443" + basePath)
		if err != nil || base.Host != "bank.example:8443" {
			return
		}
		route := &Route{Name: "r", Upstream: base, owned: []string{"Digest", "Content-Digest", "Signature", "Signature-Input", "TPP-Signature-Certificate"}}
		if withToken {
			route.owned = append(route.owned, "Authorization") // as the builder does for a token route
		}
		named := map[string]bool{}
		for _, v := range req.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = textproto.TrimString(tok); tok != "" {
					named[textproto.CanonicalMIMEHeaderKey(tok)] = true
				}
			}
		}
		out, err := route.Prepare(req, nil, nil)
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		if out.URL.Scheme != "https" || out.URL.Host != base.Host || out.Host != base.Host {
			t.Fatalf("upstream URL %q Host %q, want https to %q", out.URL, out.Host, base.Host)
		}
		if out.URL.User != nil {
			t.Fatalf("upstream URL carries userinfo")
		}
		for k := range out.Header {
			ck := textproto.CanonicalMIMEHeaderKey(k)
			for _, h := range hopHeaders {
				if ck == h {
					t.Fatalf("hop-by-hop header %s sent upstream", k)
				}
			}
			if named[ck] {
				t.Fatalf("header %s named by the app's Connection header sent upstream", k)
			}
			for _, o := range route.owned {
				if ck == textproto.CanonicalMIMEHeaderKey(o) {
					t.Fatalf("app-supplied owned header %s sent upstream", k)
				}
			}
			if withToken && ck == "Authorization" {
				t.Fatalf("the app's Authorization sent upstream on a token route")
			}
		}
		if bp := strings.TrimSuffix(base.Path, "/"); bp != "" && !strings.HasPrefix(out.URL.Path, bp+"/") && out.URL.Path != bp {
			t.Fatalf("upstream path %q escapes the route's base path %q", out.URL.Path, bp)
		}
	})
}
