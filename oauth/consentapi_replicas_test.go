package oauth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

// replicas are consent API instances over ONE shared consent store, each
// with its own route object, behind one front that carries the one
// callback URL: every request goes to the replica `to` names.
type replicas struct {
	*env
	apis  []*API
	front *httptest.Server
	to    atomic.Int32
}

func newReplicas(t *testing.T, n int, store func(t *testing.T) consentstore.Store) *replicas {
	t.Helper()
	e := newEnv(t, true)
	s := store(t)
	switch x := s.(type) {
	case *consentstore.Bolt:
		x.SetClock(e.clk.Now)
	case *consentstore.Vault:
		x.SetClock(e.clk.Now)
	}
	r := &replicas{env: e}
	r.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.apis[r.to.Load()].ServeHTTP(w, req)
	}))
	t.Cleanup(r.front.Close)
	for range n {
		api, err := NewAPI(APIConfig{Routes: []*AuthCode{e.authCode(t, s, nil, nil)}, CallbackURL: r.front.URL + "/v1/callback",
			ReturnURLs: []string{returnURL}, Now: e.clk.Now, Authenticate: func(req *http.Request) (string, error) {
				if c := req.Header.Get("X-Test-Caller"); c != "" {
					return c, nil
				}
				return "", errors.New("no caller")
			}})
		if err != nil {
			t.Fatal(err)
		}
		r.apis = append(r.apis, api)
	}
	return r
}

// call sends an API request as caller to replica i.
func (r *replicas) call(t *testing.T, i int, caller, method, path string, body any) (int, map[string]any) {
	t.Helper()
	r.to.Store(int32(i)) //nolint:gosec // G115: a handful of replicas
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, r.front.URL+path, rd)
	req.Header.Set("X-Test-Caller", caller)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// callback is the customer's browser returning to replica i: the status
// and where it is sent (303) or the error code (400).
func (r *replicas) callback(t *testing.T, i int, cb *url.URL) (int, *url.URL, string) {
	t.Helper()
	r.to.Store(int32(i)) //nolint:gosec // G115: a handful of replicas
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cb.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	return resp.StatusCode, back, resp.Header.Get("X-Tokenproxy-Error")
}

// TestConsentAPIAcrossReplicas: a consent started on one replica completes
// on another, through the browser's callback or the app's exchange; the
// state stays single use across replicas and still expires.
func TestConsentAPIAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) consentstore.Store
	}{{"bolt", boltStore}, {"vault", vaultStore}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReplicas(t, 2, tc.store)

			st, m := r.call(t, 0, "app-a", "POST", "/v1/routes/bpce/consents/marc", nil)
			if st != 201 {
				t.Fatalf("start on replica 1: %d %v", st, m)
			}
			cb := r.login(t, m["authorize_url"].(string), "marc")
			st, back, code := r.callback(t, 1, cb)
			if st != http.StatusSeeOther || back.Query().Get("status") != "active" || back.Query().Get("subject") != "marc" {
				t.Fatalf("callback on replica 2: %d %s %s; want 303 to the return URL with status=active", st, code, back.Redacted())
			}
			for i := range 2 {
				if st, m := r.call(t, i, "app-a", "GET", "/v1/routes/bpce/consents/marc", nil); st != 200 || m["status"] != "active" {
					t.Fatalf("status on replica %d: %d %v", i+1, st, m)
				}
				if st, _, code := r.callback(t, i, cb); st != 400 || code != "invalid_state" {
					t.Fatalf("the used state again on replica %d: %d %s; want 400 invalid_state", i+1, st, code)
				}
			}

			// An expired state is refused on the other replica too.
			_, m = r.call(t, 0, "app-a", "POST", "/v1/routes/bpce/consents/paul", nil)
			cb = r.login(t, m["authorize_url"].(string), "paul")
			r.clk.Add(11 * time.Minute)
			if st, _, code := r.callback(t, 1, cb); st != 400 || code != "invalid_state" {
				t.Fatalf("expired state on replica 2: %d %s; want 400 invalid_state", st, code)
			}

			// The app's own exchange, started on replica 2, on replica 1;
			// another caller's try does not use the state up.
			st, m = r.call(t, 1, "app-a", "POST", "/v1/routes/bpce/consents/lea", map[string]string{"redirect_uri": appCallback})
			if st != 201 {
				t.Fatalf("start on replica 2: %d %v", st, m)
			}
			cb = r.login(t, m["authorize_url"].(string), "lea")
			body := map[string]string{"code": cb.Query().Get("code"), "state": cb.Query().Get("state")}
			if st, m := r.call(t, 0, "app-b", "POST", "/v1/routes/bpce/consents/lea/exchange", body); st != 400 || m["error"] != "invalid_state" {
				t.Fatalf("another caller used app-a's state: %d %v", st, m)
			}
			if st, m := r.call(t, 0, "app-a", "POST", "/v1/routes/bpce/consents/lea/exchange", body); st != 200 || m["status"] != "active" {
				t.Fatalf("exchange on replica 1: %d %v", st, m)
			}
			if st, m := r.call(t, 1, "app-a", "POST", "/v1/routes/bpce/consents/lea/exchange", body); st != 400 || m["error"] != "invalid_state" {
				t.Fatalf("the used state again on replica 2: %d %v", st, m)
			}
		})
	}
}
