// Package stet emulates the STET PSD2 account information endpoints of the BPCE 89C3 sandbox:
// GET /stet/psd2/v1/accounts and PUT /stet/psd2/v1/consents. Every request must carry a
// draft-cavage-http-signatures-10 Signature by a key the emulator trusts (Config.Keys, looked up by keyId:
// the URL of the published QSealC or the base64 public key, as in the 89C3 example), covering
// (request-target), digest, x-request-id and every psu-* header the request carries, and a Digest of the
// body. Rejections are 401 with a STET error body. Wrap the Handler in an mTLS server.
package stet

import (
	"crypto"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/internal/psd2sig"
)

// Config configures the emulator.
type Config struct {
	// Keys maps a keyId to the public key of the QSealC it names.
	Keys map[string]crypto.PublicKey
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OAuth, when set, serves the authorization server too (see OAuthConfig).
	OAuth *OAuthConfig
}

// Handler is the emulator; it records every request it answers and the consents it was given.
type Handler struct {
	cfg  Config
	mux  *http.ServeMux
	rec  psd2sig.Recorder
	auth *authServer // nil without Config.OAuth

	mu       sync.Mutex
	consents []Consent
}

// New returns the emulator.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /stet/psd2/v1/accounts", h.signed(h.accounts))
	h.mux.HandleFunc("PUT /stet/psd2/v1/consents", h.signed(h.putConsents))
	if cfg.OAuth != nil {
		h.auth = newAuthServer(*cfg.OAuth, cfg.Now)
		h.auth.register(h.mux)
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Received returns the requests answered so far, oldest first.
func (h *Handler) Received() []psd2sig.Received { return h.rec.Received() }

// Counts returns accepted and rejected totals and rejections by reason code.
func (h *Handler) Counts() (accepted, rejected int, byReason map[string]int) { return h.rec.Counts() }

// Consents returns the consents received by PUT /consents.
func (h *Handler) Consents() []Consent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Consent(nil), h.consents...)
}

// Consent is the PUT /consents body.
type Consent struct {
	Balances             []AccountRef `json:"balances"`
	Transactions         []AccountRef `json:"transactions"`
	TrustedBeneficiaries bool         `json:"trustedBeneficiaries"`
	PSUIdentity          bool         `json:"psuIdentity"`
}

// AccountRef names an account by IBAN.
type AccountRef struct {
	IBAN string `json:"iban"`
}

func (h *Handler) signed(next func(http.ResponseWriter, *http.Request, []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		entry := psd2sig.Received{Time: h.cfg.Now(), Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body}
		if err := h.check(r, body); err != nil {
			rj := psd2sig.AsRejection(err)
			entry.Reason = rj.Error()
			h.rec.Add(entry)
			writeError(w, r, http.StatusUnauthorized, rj.Reason, rj.Detail)
			return
		}
		if h.auth != nil {
			if _, ok := h.auth.validAccess(r.Header.Get("Authorization")); !ok {
				entry.Reason = "no valid access token"
				h.rec.Add(entry)
				writeError(w, r, http.StatusUnauthorized, "invalid-token", "the access token is missing, expired or revoked")
				return
			}
		}
		entry.Accepted = true
		h.rec.Add(entry)
		w.Header().Set("X-Request-ID", r.Header.Get("X-Request-ID"))
		next(w, r, body)
	}
}

func (h *Handler) check(r *http.Request, body []byte) error {
	if r.Header.Get("X-Request-ID") == "" {
		return psd2sig.Reject(psd2sig.ReasonRequestID, "X-Request-ID is required")
	}
	p, err := psd2sig.ParseSignature(r.Header.Get("Signature"))
	if err != nil {
		return err
	}
	pub, ok := h.cfg.Keys[p.KeyID]
	if !ok {
		return psd2sig.Reject(psd2sig.ReasonKeyUnknown, "keyId %q names no QSealC registered for this TPP", p.KeyID)
	}
	if err := p.RequireCovered(r.Header, []string{"(request-target)", "digest", "x-request-id"}, psd2sig.PSUHeaders(r.Header)); err != nil {
		return err
	}
	if err := psd2sig.CheckDigest(r.Header, body); err != nil {
		return err
	}
	return psd2sig.Verify(r, p, pub)
}

func (h *Handler) accounts(w http.ResponseWriter, _ *http.Request, _ []byte) {
	w.Header().Set("Content-Type", "application/hal+json")
	_, _ = io.WriteString(w, accountsBody)
}

func (h *Handler) putConsents(w http.ResponseWriter, r *http.Request, body []byte) {
	var c Consent
	if err := json.Unmarshal(body, &c); err != nil {
		writeError(w, r, http.StatusBadRequest, "invalid-body", "the consent body is not valid JSON: "+err.Error())
		return
	}
	h.mu.Lock()
	h.consents = append(h.consents, c)
	h.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

// writeError writes the STET error model (timestamp, status, error, message, path).
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Timestamp string `json:"timestamp"`
		Status    int    `json:"status"`
		Error     string `json:"error"`
		Message   string `json:"message"`
		Path      string `json:"path"`
		Reason    string `json:"reason"`
	}{time.Now().UTC().Format(time.RFC3339), status, http.StatusText(status), msg, r.URL.Path, code})
}

// accountsBody is the 89C3 sandbox answer for persona Marc (consent given), from the seed.
const accountsBody = `{
  "_links": {"last": {}, "self": {}, "first": {}},
  "accounts": [
    {
      "cashAccountType": "CACC",
      "accountId": {"iban": "FR7613807008043001965405158"},
      "resourceId": "038-CPT30019654051",
      "product": "COMPTE CHEQUE",
      "balances": [
        {"balanceType": "VALU", "name": "Solde en Valeur", "balanceAmount": {"amount": "4321.95", "currency": "EUR"}, "referenceDate": "2019-09-04"},
        {"balanceType": "CLBD", "name": "Solde Comptable", "balanceAmount": {"amount": "4179.95", "currency": "EUR"}, "referenceDate": "2019-09-03"},
        {"balanceType": "OTHR", "name": "Solde TP", "balanceAmount": {"amount": "4348.95", "currency": "EUR"}}
      ],
      "_links": {"balances": {"templated": false}, "transactions": {"templated": false}},
      "usage": "PRIV",
      "psuStatus": "Account Holder",
      "name": "Compte perso",
      "bicFi": "CCBPFRPPNAN",
      "currency": "EUR",
      "details": "COMPTE CHEQUE"
    },
    {
      "cashAccountType": "CACC",
      "accountId": {"iban": "FR7613807008043001965405255"},
      "resourceId": "038-CPT30019654052",
      "product": "COMPTE CHEQUE",
      "balances": [
        {"balanceType": "VALU", "name": "Solde en Valeur", "balanceAmount": {"amount": "459.56", "currency": "EUR"}, "referenceDate": "2019-09-04"},
        {"balanceType": "CLBD", "name": "Solde Comptable", "balanceAmount": {"amount": "459.56", "currency": "EUR"}, "referenceDate": "2019-09-03"},
        {"balanceType": "OTHR", "name": "Solde TP", "balanceAmount": {"amount": "459.56", "currency": "EUR"}}
      ],
      "_links": {"balances": {"templated": false}, "transactions": {"templated": false}},
      "usage": "PRIV",
      "psuStatus": "Account Holder",
      "name": "Retrait et Cheques",
      "bicFi": "CCBPFRPPNAN",
      "currency": "EUR",
      "details": "COMPTE CHEQUE"
    },
    {
      "cashAccountType": "CACC",
      "accountId": {"iban": "FR7613807008043001965405352"},
      "resourceId": "038-CPT30019654053",
      "product": "COMPTE CHEQUE",
      "balances": [
        {"balanceType": "VALU", "name": "Solde en Valeur", "balanceAmount": {"amount": "2165.50", "currency": "EUR"}, "referenceDate": "2019-09-04"},
        {"balanceType": "CLBD", "name": "Solde Comptable", "balanceAmount": {"amount": "2165.50", "currency": "EUR"}, "referenceDate": "2019-09-03"},
        {"balanceType": "OTHR", "name": "Solde TP", "balanceAmount": {"amount": "2165.50", "currency": "EUR"}}
      ],
      "_links": {"balances": {"templated": false}, "transactions": {"templated": false}},
      "usage": "PRIV",
      "psuStatus": "Account Holder",
      "name": "Compte mensualités",
      "bicFi": "CCBPFRPPNAN",
      "currency": "EUR",
      "details": "COMPTE CHEQUE"
    }
  ],
  "connectedPsu": "MALLOW MARC"
}
`
