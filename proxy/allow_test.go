package proxy_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/tokenproxy/tokenproxy/proxy"
)

// Gateway mode: callers outside the allowed CIDRs get 403; a route that names
// callers wants Proxy-Authorization (407 without it), and a caller not on the
// route's list gets 403. Everything has a JSON body.
func TestGatewayCallers(t *testing.T) {
	dir := t.TempDir()
	for n, v := range map[string]string{"payments": "payments-secret-41", "billing": "billing-secret-42"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	top := "callers:\n  - {name: payments, password: {file: " + filepath.Join(dir, "payments") + "}}\n  - {name: billing, password: {file: " + filepath.Join(dir, "billing") + "}}\n"

	t.Run("cidr", func(t *testing.T) {
		h := newHarness(t, harnessOpts{top: top, extraRoute: "    allow: {cidrs: [10.0.0.0/8]}\n"})
		a := h.get(h.client(), accountsURL)
		if a.status != 403 || errorCode(t, a) != proxy.CodeCallerNotAllowed {
			t.Fatalf("%d %s", a.status, a.body)
		}
	})
	t.Run("callers", func(t *testing.T) {
		h := newHarness(t, harnessOpts{top: top, extraRoute: "    allow: {cidrs: [127.0.0.0/8], callers: [payments]}\n"})
		h.logs.ForbidStrings("payments-secret-41", "billing-secret-42")
		with := func(user *url.Userinfo) *http.Client {
			u := *h.proxyURL
			u.User = user
			return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&u)}}
		}
		a := h.get(h.client(), accountsURL)
		if a.status != 407 || errorCode(t, a) != proxy.CodeCallerAuthRequired || a.header.Get("Proxy-Authenticate") == "" {
			t.Fatalf("no credentials: %d %v %s", a.status, a.header, a.body)
		}
		if a := h.get(with(url.UserPassword("payments", "wrong")), accountsURL); a.status != 407 {
			t.Fatalf("wrong password: %d", a.status)
		}
		if a := h.get(with(url.UserPassword("billing", "billing-secret-42")), accountsURL); a.status != 403 || errorCode(t, a) != proxy.CodeCallerNotAllowed {
			t.Fatalf("caller not on the route: %d %s", a.status, a.body)
		}
		if a := h.get(with(url.UserPassword("payments", "payments-secret-41")), accountsURL); a.status != 200 {
			t.Fatalf("allowed caller: %d %s", a.status, a.body)
		}
		if h.logs.Count(`"caller":"payments"`, `"status":200`) != 1 {
			t.Fatalf("caller not logged:\n%s", h.logs)
		}
	})
}
