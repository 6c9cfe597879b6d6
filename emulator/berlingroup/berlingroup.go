// Package berlingroup emulates a Berlin Group NextGenPSD2 bank's sandbox endpoint
// GET /v1/sandbox/accounts/{mockAccountId}, including the request signature checks the seed describes:
// X-Request-ID, TPP-Signature-Certificate (base64 DER), a draft-cavage-http-signatures-10 Signature whose
// keyId is "SN=<hex serial>,CA=<issuer DN>" of that certificate, covering date, digest, x-request-id and
// psu-id, psu-corporate-id and tpp-redirect-uri when present, and a Digest of the body.
// Rejections are 401 with a NextGenPSD2 tppMessages body. Wrap the Handler in an mTLS server.
package berlingroup

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/internal/psd2sig"
	"github.com/tokenproxy/tokenproxy/signer"
)

// Config configures the emulator. The zero value serves DefaultAccounts and checks signatures without
// certificate chain validation.
type Config struct {
	// Accounts maps mockAccountId to the account returned; nil means DefaultAccounts.
	Accounts map[string]Account
	// Roots, when set, must issue the TPP-Signature-Certificate.
	Roots *x509.CertPool
	// DNOrder is the issuer DN order expected in the keyId: signer.DNOrderRFC4514 (default) or
	// signer.DNOrderCertificate.
	DNOrder string
	// Now is the clock (default time.Now); MaxClockSkew bounds the Date header (default 5 minutes).
	Now          func() time.Time
	MaxClockSkew time.Duration
}

// Account is the seed's account object.
type Account struct {
	ID              string    `json:"id"`
	CustomerNumber  string    `json:"customerNumber"`
	AccountName     string    `json:"accountName"`
	BBAN            string    `json:"bban"`
	IBAN            string    `json:"iban"`
	Currency        string    `json:"currency"`
	Product         string    `json:"product"`
	CashAccountType string    `json:"cashAccountType"`
	CreditLine      int32     `json:"creditLine"`
	Balances        []Balance `json:"balances"`
	Links           Links     `json:"_links"`
}

// Balance is one entry of Account.Balances.
type Balance struct {
	BalanceAmount Amount `json:"balanceAmount"`
	BalanceType   string `json:"balanceType"` // closingBooked or expected
}

// Amount is a balance amount; the seed types amount as int32.
type Amount struct {
	Currency string `json:"currency"`
	Amount   int32  `json:"amount"`
}

// Links are the account's _links.
type Links struct {
	Self         Link `json:"self"`
	Transactions Link `json:"transactions"`
}

// Link is an href with its verbs.
type Link struct {
	Href  string   `json:"href"`
	Verbs []string `json:"verbs"`
}

// DefaultMockAccountID is the id of the account DefaultAccounts holds.
const DefaultMockAccountID = "3dc3d5b3-7023-4848-9853-f5400a64e80f"

// DefaultAccounts returns one sandbox account under DefaultMockAccountID.
func DefaultAccounts() map[string]Account {
	id := DefaultMockAccountID
	return map[string]Account{id: {
		ID: id, CustomerNumber: "12345678901", AccountName: "Sandbox brukskonto", BBAN: "12345678903",
		IBAN: "NO9312345678903", Currency: "NOK", Product: "Brukskonto", CashAccountType: "CACC", CreditLine: 0,
		Balances: []Balance{
			{BalanceAmount: Amount{Currency: "NOK", Amount: 12500}, BalanceType: "closingBooked"},
			{BalanceAmount: Amount{Currency: "NOK", Amount: 12250}, BalanceType: "expected"},
		},
		Links: Links{
			Self:         Link{Href: "/v1/sandbox/accounts/" + id, Verbs: []string{"GET", "DELETE"}},
			Transactions: Link{Href: "/v1/sandbox/accounts/" + id + "/transactions", Verbs: []string{"GET", "POST"}},
		},
	}}
}

// Handler is the emulator; it records every request it answers.
type Handler struct {
	cfg Config
	mux *http.ServeMux
	rec psd2sig.Recorder
}

// New returns the emulator.
func New(cfg Config) *Handler {
	if cfg.Accounts == nil {
		cfg.Accounts = DefaultAccounts()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = 5 * time.Minute
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /v1/sandbox/accounts/{mockAccountId}", h.getAccount)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Received returns the requests answered so far, oldest first.
func (h *Handler) Received() []psd2sig.Received { return h.rec.Received() }

// Counts returns accepted and rejected totals and rejections by reason code.
func (h *Handler) Counts() (accepted, rejected int, byReason map[string]int) { return h.rec.Counts() }

func (h *Handler) getAccount(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	entry := psd2sig.Received{Time: h.cfg.Now(), Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body}
	if err := h.check(r, body); err != nil {
		rj := psd2sig.AsRejection(err)
		entry.Reason = rj.Error()
		h.rec.Add(entry)
		writeTPPError(w, rj)
		return
	}
	acc, ok := h.cfg.Accounts[r.PathValue("mockAccountId")]
	if !ok {
		entry.Accepted = true // the signature was fine; the account is unknown
		h.rec.Add(entry)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(struct {
			TPPMessages tppMessages `json:"tppMessages"`
		}{tppMessages{{Category: "ERROR", Code: "RESOURCE_UNKNOWN", Text: "no sandbox account " + r.PathValue("mockAccountId")}}})
		return
	}
	entry.Accepted = true
	h.rec.Add(entry)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Request-ID", r.Header.Get("X-Request-ID"))
	_ = json.NewEncoder(w).Encode([]Account{acc})
}

// check runs the seed's checks in the order a bank would report them.
func (h *Handler) check(r *http.Request, body []byte) error {
	if r.Header.Get("X-Request-ID") == "" {
		return psd2sig.Reject(psd2sig.ReasonRequestID, "X-Request-ID is required")
	}
	certB64 := r.Header.Get("TPP-Signature-Certificate")
	if certB64 == "" {
		return psd2sig.Reject(psd2sig.ReasonCertMissing, "TPP-Signature-Certificate is required")
	}
	der, err := base64.StdEncoding.DecodeString(certB64)
	if err != nil {
		return psd2sig.Reject(psd2sig.ReasonCertInvalid, "TPP-Signature-Certificate is not base64: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return psd2sig.Reject(psd2sig.ReasonCertInvalid, "TPP-Signature-Certificate is not a DER certificate: %v", err)
	}
	now := h.cfg.Now()
	if now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return psd2sig.Reject(psd2sig.ReasonCertInvalid, "the signing certificate is not valid now (%s to %s)", cert.NotBefore, cert.NotAfter)
	}
	if h.cfg.Roots != nil {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: h.cfg.Roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return psd2sig.Reject(psd2sig.ReasonCertInvalid, "the signing certificate is not trusted: %v", err)
		}
	}
	p, err := psd2sig.ParseSignature(r.Header.Get("Signature"))
	if err != nil {
		return err
	}
	if err := checkKeyID(p.KeyID, cert, h.cfg.DNOrder); err != nil {
		return err
	}
	if err := p.RequireCovered(r.Header, []string{"date", "digest", "x-request-id"},
		[]string{"psu-id", "psu-corporate-id", "tpp-redirect-uri"}); err != nil {
		return err
	}
	if err := psd2sig.CheckDigest(r.Header, body); err != nil {
		return err
	}
	if err := psd2sig.CheckDate(r.Header, now, h.cfg.MaxClockSkew); err != nil {
		return err
	}
	return psd2sig.Verify(r, p, cert.PublicKey)
}

// checkKeyID checks keyId="SN=<hex serial>,CA=<issuer DN>" against the certificate. The serial is
// compared as a number (hex case and leading zeros do not matter), the DN as a string.
func checkKeyID(keyID string, cert *x509.Certificate, dnOrder string) error {
	sn, ca, ok := strings.Cut(keyID, ",CA=")
	if !ok || !strings.HasPrefix(sn, "SN=") {
		return psd2sig.Reject(psd2sig.ReasonKeyID, "keyId %q is not SN=<serial>,CA=<issuer>", keyID)
	}
	serial, ok := new(big.Int).SetString(strings.TrimPrefix(sn, "SN="), 16)
	if !ok {
		return psd2sig.Reject(psd2sig.ReasonKeyID, "keyId serial %q is not hexadecimal", strings.TrimPrefix(sn, "SN="))
	}
	if serial.Cmp(cert.SerialNumber) != 0 {
		return psd2sig.Reject(psd2sig.ReasonKeyID, "keyId serial %s is not the serial %X of TPP-Signature-Certificate", strings.TrimPrefix(sn, "SN="), cert.SerialNumber)
	}
	want, err := signer.FormatDN(cert.RawIssuer, dnOrder)
	if err != nil {
		return psd2sig.Reject(psd2sig.ReasonCertInvalid, "issuer DN: %v", err)
	}
	if ca != want {
		return psd2sig.Reject(psd2sig.ReasonKeyID, "keyId CA %q is not the issuer %q of TPP-Signature-Certificate", ca, want)
	}
	return nil
}

type tppMessage struct {
	Category string `json:"category"`
	Code     string `json:"code"`
	Text     string `json:"text"`
}

type tppMessages []tppMessage

var codes = map[string]string{
	psd2sig.ReasonCertMissing:      "CERTIFICATE_MISSING",
	psd2sig.ReasonCertInvalid:      "CERTIFICATE_INVALID",
	psd2sig.ReasonRequestID:        "FORMAT_ERROR",
	psd2sig.ReasonDate:             "FORMAT_ERROR",
	psd2sig.ReasonSignatureMissing: "SIGNATURE_MISSING",
}

func writeTPPError(w http.ResponseWriter, rj *psd2sig.Rejection) {
	code := codes[rj.Reason]
	if code == "" {
		code = "SIGNATURE_INVALID"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(struct {
		TPPMessages tppMessages `json:"tppMessages"`
		Reason      string      `json:"reason"`
	}{tppMessages{{Category: "ERROR", Code: code, Text: rj.Detail}}, rj.Reason})
}
