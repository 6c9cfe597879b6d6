package psd2hub_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/emulator/psd2hub"
)

func TestHubChecks(t *testing.T) {
	h := psd2hub.New(psd2hub.Config{ClientID: "c", ClientSecret: "s"})
	do := func(method, path, auth, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if strings.HasPrefix(auth, "Bearer ") {
			req.Header.Set("Authorization", auth)
		} else if auth != "" {
			id, sec, _ := strings.Cut(auth, ":")
			req.SetBasicAuth(id, sec)
		}
		if method == "POST" && path == psd2hub.TokenPath {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	form := url.Values{"grant_type": {"client_credentials"}}.Encode()
	if w := do("POST", psd2hub.TokenPath, "c:wrong", form); w.Code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", w.Code)
	}
	w := do("POST", psd2hub.TokenPath, "c:s", form)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("token: %d %s", w.Code, w.Body)
	}
	if w := do("POST", "/sandbox/user-resources/api/user", "", `{}`); w.Code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", w.Code)
	}
	w = do("POST", "/sandbox/user-resources/api/user", "Bearer "+tok.AccessToken, `{"clientId":"x"}`)
	var u struct{ UserID string }
	if w.Code != http.StatusCreated || json.Unmarshal(w.Body.Bytes(), &u) != nil {
		t.Fatalf("user: %d %s", w.Code, w.Body)
	}
	path := "/sandbox/consent-resources/api/user/id/" + u.UserID + "/consent"
	if w := do("POST", path, "Bearer "+tok.AccessToken, `{"bankId":"1","redirectUrl":"https://nowhere.example"}`); w.Code != http.StatusBadRequest {
		t.Fatalf("unregistered redirect: %d %s", w.Code, w.Body)
	}
	if accepted, rejected, tokens := h.Counts(); accepted != 2 || rejected != 1 || tokens != 2 {
		t.Fatalf("counts %d %d %d", accepted, rejected, tokens)
	}
	strict := psd2hub.New(psd2hub.Config{ClientID: "c", ClientSecret: "s", RequireClientCertificate: true})
	rw := httptest.NewRecorder()
	strict.ServeHTTP(rw, httptest.NewRequest("POST", psd2hub.TokenPath, nil))
	if rw.Code != http.StatusUnauthorized {
		t.Fatalf("no client certificate: %d", rw.Code)
	}
}
