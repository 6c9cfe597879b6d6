// Package psd2hub emulates the sandbox of banqware's PSD2 API Hub as its onboarding guide describes it:
// PUT /sandbox/management-resources/api/tenant/urls registers redirect and callback URLs; POST
// /sandbox/user-resources/api/user creates a user; POST .../consent-resources/api/user/id/{userId}/consent
// creates a consent (status requested) whose redirect URL must be registered; GET and DELETE read and delete
// it; POST .../update-resources/api/user/id/{userId}/consent/{consentId}/update starts an update, GET
// .../update/{updateId} reads it. Every call needs a bearer token from POST /oauth/token, an OAuth2
// client_credentials grant with the sandbox credentials in HTTP Basic (the guide leaves the endpoint to its
// Security page; the emulator serves it there). With RequireClientCertificate (production) a request
// without a client certificate is refused. Wrap the Handler in a TLS server.
package psd2hub

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// TokenPath is where the emulator serves its token endpoint.
const TokenPath = "/oauth/token" //nolint:gosec // G101: an endpoint path, not a credential

// Config configures the emulator.
type Config struct {
	// ClientID and ClientSecret are the sandbox credentials.
	ClientID, ClientSecret string
	// TokenTTL is the access token's lifetime (default 5 minutes).
	TokenTTL time.Duration
	// RequireClientCertificate refuses requests without a TLS client certificate.
	RequireClientCertificate bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Handler is the emulator.
type Handler struct {
	cfg Config
	mux *http.ServeMux

	mu        sync.Mutex
	tokens    map[string]time.Time
	tokenReqs int
	redirects []string
	users     map[string]string // userId -> clientId
	consents  map[string]*Consent
	accepted  int
	rejected  int
}

// Consent is a user's consent to one bank.
type Consent struct {
	ID          string `json:"consentId"`
	UserID      string `json:"userId"`
	BankID      string `json:"bankId"`
	BankIDType  string `json:"bankIdType"`
	RedirectURL string `json:"redirectUrl"`
	Status      string `json:"status"`
	// AuthorizationURL is where the customer authorizes access at the bank.
	AuthorizationURL string `json:"authorizationUrl"`
}

// New returns the emulator.
func New(cfg Config) *Handler {
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), tokens: map[string]time.Time{}, users: map[string]string{}, consents: map[string]*Consent{}}
	h.mux.HandleFunc("POST "+TokenPath, h.token)
	const base = "/sandbox/"
	h.mux.HandleFunc("PUT "+base+"management-resources/api/tenant/urls", h.authed(h.putURLs))
	h.mux.HandleFunc("POST "+base+"user-resources/api/user", h.authed(h.createUser))
	h.mux.HandleFunc("POST "+base+"consent-resources/api/user/id/{userId}/consent", h.authed(h.createConsent))
	h.mux.HandleFunc("GET "+base+"consent-resources/api/user/id/{userId}/consent/{consentId}", h.authed(h.getConsent))
	h.mux.HandleFunc("DELETE "+base+"consent-resources/api/user/id/{userId}/consent/{consentId}", h.authed(h.deleteConsent))
	h.mux.HandleFunc("POST "+base+"update-resources/api/user/id/{userId}/consent/{consentId}/update", h.authed(h.createUpdate))
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.cfg.RequireClientCertificate && (r.TLS == nil || len(r.TLS.PeerCertificates) == 0) {
		h.count(false)
		writeError(w, http.StatusUnauthorized, "a client certificate is required")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Counts returns the API calls accepted and rejected (token requests apart) and the token requests.
func (h *Handler) Counts() (accepted, rejected, tokenRequests int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.accepted, h.rejected, h.tokenReqs
}

// Issued returns every access token issued, for leak checks.
func (h *Handler) Issued() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.tokens))
	for t := range h.tokens {
		out = append(out, t)
	}
	return out
}

func (h *Handler) count(ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.accepted++
	} else {
		h.rejected++
	}
}

func newID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func constEq(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.tokenReqs++
	h.mu.Unlock()
	id, secret, ok := r.BasicAuth()
	if !ok || !constEq(id, h.cfg.ClientID) || !constEq(secret, h.cfg.ClientSecret) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_grant_type"}`))
		return
	}
	at := newID("hub-at-")
	h.mu.Lock()
	h.tokens[at] = h.cfg.Now().Add(h.cfg.TokenTTL)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(h.cfg.TokenTTL / time.Second)})
}

// authed refuses a call without a valid bearer token.
func (h *Handler) authed(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h.mu.Lock()
		exp, known := h.tokens[tok]
		valid := found && known && h.cfg.Now().Before(exp)
		h.mu.Unlock()
		h.count(valid)
		if !valid {
			writeError(w, http.StatusUnauthorized, "the access token is missing, unknown or expired")
			return
		}
		next(w, r)
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errorCode": status, "errorMessage": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Handler) putURLs(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RedirectURLs       []string `json:"redirectUrls"`
		UpdateCallbackURLs []string `json:"updateCallbackUrls"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.RedirectURLs) == 0 {
		writeError(w, http.StatusBadRequest, "redirectUrls is required")
		return
	}
	h.mu.Lock()
	h.redirects = body.RedirectURLs
	h.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ClientID string `json:"clientId"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	id := newID("user-")
	h.mu.Lock()
	h.users[id] = body.ClientID
	h.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]string{"userId": id, "clientId": body.ClientID})
}

func (h *Handler) createConsent(w http.ResponseWriter, r *http.Request) {
	var body struct {
		BankID      string `json:"bankId"`
		BankIDType  string `json:"bankIdType"`
		RedirectURL string `json:"redirectUrl"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.BankID == "" {
		writeError(w, http.StatusBadRequest, "bankId is required")
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.users[r.PathValue("userId")]; !ok {
		writeError(w, http.StatusNotFound, "no user "+r.PathValue("userId"))
		return
	}
	if !slices.Contains(h.redirects, body.RedirectURL) {
		writeError(w, http.StatusBadRequest, "redirectUrl is not registered; PUT it to management-resources/api/tenant/urls first")
		return
	}
	c := &Consent{ID: newID("consent-"), UserID: r.PathValue("userId"), BankID: body.BankID, BankIDType: body.BankIDType,
		RedirectURL: body.RedirectURL, Status: "requested"}
	c.AuthorizationURL = "https://bank.example/authorize?consent=" + c.ID
	h.consents[c.ID] = c
	writeJSON(w, http.StatusCreated, c)
}

func (h *Handler) consent(r *http.Request) (*Consent, bool) {
	c, ok := h.consents[r.PathValue("consentId")]
	return c, ok && c.UserID == r.PathValue("userId")
}

func (h *Handler) getConsent(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.consent(r)
	if !ok {
		writeError(w, http.StatusNotFound, "no such consent")
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Handler) deleteConsent(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.consent(r); !ok {
		writeError(w, http.StatusNotFound, "no such consent")
		return
	}
	delete(h.consents, r.PathValue("consentId"))
	w.WriteHeader(http.StatusNoContent)
}

// Give marks a consent given, as the hub does once the customer authorized at the bank.
func (h *Handler) Give(consentID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.consents[consentID]
	if ok {
		c.Status = "given"
	}
	return ok
}

func (h *Handler) createUpdate(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.consent(r)
	if !ok {
		writeError(w, http.StatusNotFound, "no such consent")
		return
	}
	if c.Status != "given" {
		writeError(w, http.StatusConflict, "the consent is "+c.Status+", not given")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"updateId": newID("update-"), "status": "completed"})
}
