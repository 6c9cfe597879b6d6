package tokenclient

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// TestBasicGet runs Banking Circle's flow against a TLS endpoint: what goes
// on the wire, and how each answer reaches the cache.
func TestBasicGet(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		ttl        time.Duration
		wantStatus int
		retryAfter time.Duration
		reason     string
	}{
		{name: "token", status: 200, body: `{"access_token":"tok","expires_in":"300","token_type":"Bearer"}`, ttl: 300 * time.Second},
		{name: "no expires_in", status: 200, body: `{"access_token":"tok"}`, ttl: time.Minute},
		{name: "429 with Retry-After", status: 429, header: map[string]string{"Retry-After": "7"}, wantStatus: 429, retryAfter: 7 * time.Second, reason: "429 Too Many Requests"},
		{name: "401", status: 401, body: "nope", wantStatus: 401, reason: "rejected the username or password"},
		{name: "403", status: 403, wantStatus: 403, reason: "whitelisted"},
		{name: "500", status: 500, wantStatus: 500, reason: "answered Internal Server Error"},
		{name: "bad expires_in", status: 200, body: `{"access_token":"tok","expires_in":"soon"}`, wantStatus: 200, reason: "reading the token response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				user, pass, ok := r.BasicAuth()
				if r.Method != http.MethodGet || !ok || user != "u" || pass != "p:w" ||
					r.Header.Get("Accept") != "application/json" || r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("request %s %v", r.Method, r.Header)
				}
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			b := &BasicGet{URL: srv.URL + "/authorize", Client: srv.Client(), DefaultTTL: time.Minute,
				Username: secret.Static(secret.New("u"), "u"), Password: secret.Static(secret.New("p:w"), "p")}
			start := time.Now()
			tok, err := b.Fetch(t.Context(), "")
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tok.Header != "Bearer tok" || tok.Expiry.Sub(start) < tc.ttl || tok.Expiry.Sub(start) > tc.ttl+time.Minute {
					t.Fatalf("token %q expires in %v, want %v", tok.Header, tok.Expiry.Sub(start), tc.ttl)
				}
				return
			}
			var fe *tokencache.FetchError
			if !errors.As(err, &fe) || fe.Status != tc.wantStatus || fe.RetryAfter != tc.retryAfter || !strings.Contains(fe.Reason, tc.reason) {
				t.Fatalf("err = %#v, want status %d, retry after %v, reason %q", err, tc.wantStatus, tc.retryAfter, tc.reason)
			}
		})
	}
}

// TestDoScrubsURL: a transport error keeps its cause but not the URL, whose
// query could hold a credential.
func TestDoScrubsURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = Do(t.Context(), http.DefaultClient, Request{Method: http.MethodGet, URL: "http://" + addr + "/token?client_secret=s3cret"})
	var ce *Error
	if !errors.As(err, &ce) || ce.Stage != Send {
		t.Fatalf("err = %v, want a Send *Error", err)
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret") || strings.Contains(msg, "/token") || !strings.Contains(msg, "refused") {
		t.Fatalf("error %q holds the URL or lost its cause", msg)
	}
}

// TestDoBoundsBody: at most MaxBody bytes are kept, and a longer answer says so.
func TestDoBoundsBody(t *testing.T) {
	for _, n := range []int{MaxBody, MaxBody + 1, 3 * MaxBody} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.FormValue("grant_type") != "x" {
				t.Errorf("request %s %v", r.Method, r.Header)
			}
			_, _ = w.Write([]byte(strings.Repeat("x", n)))
		}))
		a, err := Do(t.Context(), srv.Client(), Request{Method: http.MethodPost, URL: srv.URL, Form: map[string][]string{"grant_type": {"x"}}})
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Body) != MaxBody || a.TooLarge != (n > MaxBody) {
			t.Fatalf("%d bytes sent: kept %d, too large %v", n, len(a.Body), a.TooLarge)
		}
	}
}
