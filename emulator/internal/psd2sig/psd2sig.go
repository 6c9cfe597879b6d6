// Package psd2sig holds the draft-cavage-http-signatures-10 checks the PSD2 emulators share: parsing the
// Signature header, the Digest over the received body, the covered headers, and the signature itself,
// which github.com/go-fed/httpsig verifies.
package psd2sig

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-fed/httpsig"

	"github.com/tokenproxy/tokenproxy/signer"
)

// Reason codes a rejection carries (Received.Reason starts with one of them).
const (
	ReasonSignatureMissing   = "signature-missing"
	ReasonSignatureMalformed = "signature-malformed"
	ReasonSignatureInvalid   = "signature-invalid"
	ReasonAlgorithm          = "algorithm-mismatch"
	ReasonKeyID              = "keyid-mismatch"
	ReasonKeyUnknown         = "keyid-unknown"
	ReasonNotCovered         = "header-not-covered"
	ReasonDigestMissing      = "digest-missing"
	ReasonDigestMismatch     = "digest-mismatch"
	ReasonCertMissing        = "certificate-missing"
	ReasonCertInvalid        = "certificate-invalid"
	ReasonRequestID          = "x-request-id-missing"
	ReasonDate               = "date-invalid"
)

// Rejection is a failed check: Reason is a code above, Detail says what exactly.
type Rejection struct {
	Reason string
	Detail string
}

func (r *Rejection) Error() string { return r.Reason + ": " + r.Detail }

// Reject builds a Rejection.
func Reject(reason, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Params are the parameters of a draft-cavage Signature header.
type Params struct {
	KeyID     string
	Algorithm string
	Headers   []string
	Signature string
	// Raw is the header value after RFC 2047 decoding.
	Raw string
}

// ParseSignature parses a Signature header value, decoding an RFC 2047 encoded word first. Commas
// inside quoted values (such as a keyId "SN=...,CA=...") are kept.
func ParseSignature(v string) (*Params, error) {
	if v == "" {
		return nil, Reject(ReasonSignatureMissing, "the request has no Signature header")
	}
	dec, err := signer.DecodeRFC2047(v)
	if err != nil {
		return nil, Reject(ReasonSignatureMalformed, "Signature header: %v", err)
	}
	p := &Params{Raw: dec}
	for s := strings.TrimSpace(dec); s != ""; {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || len(s) < eq+2 || s[eq+1] != '"' {
			return nil, Reject(ReasonSignatureMalformed, "Signature header: expected name=\"value\" at %q", s)
		}
		end := strings.IndexByte(s[eq+2:], '"')
		if end < 0 {
			return nil, Reject(ReasonSignatureMalformed, "Signature header: unterminated value")
		}
		name, val := strings.TrimSpace(s[:eq]), s[eq+2:eq+2+end]
		switch name {
		case "keyId":
			p.KeyID = val
		case "algorithm":
			p.Algorithm = val
		case "headers":
			p.Headers = strings.Fields(val)
		case "signature":
			p.Signature = val
		}
		s = strings.TrimLeft(s[eq+2+end+1:], " ,")
	}
	switch {
	case p.KeyID == "":
		return nil, Reject(ReasonSignatureMalformed, "Signature header has no keyId")
	case p.Signature == "":
		return nil, Reject(ReasonSignatureMalformed, "Signature header has no signature")
	case p.Headers == nil:
		p.Headers = []string{"date"}
	}
	return p, nil
}

// Covers reports whether the signature covers header (lower case).
func (p *Params) Covers(header string) bool {
	for _, h := range p.Headers {
		if h == header {
			return true
		}
	}
	return false
}

// RequireCovered checks that every header in must is covered, and every header in ifPresent that the
// request carries.
func (p *Params) RequireCovered(h http.Header, must, ifPresent []string) error {
	for _, m := range must {
		if !p.Covers(m) {
			return Reject(ReasonNotCovered, "the signature must cover %q (headers=%q)", m, strings.Join(p.Headers, " "))
		}
	}
	for _, m := range ifPresent {
		if len(h.Values(m)) > 0 && !p.Covers(m) {
			return Reject(ReasonNotCovered, "the request carries %q, so the signature must cover it (headers=%q)", m, strings.Join(p.Headers, " "))
		}
	}
	return nil
}

// PSUHeaders lists the psu-* headers of a request, lower case.
func PSUHeaders(h http.Header) []string {
	var out []string
	for k := range h {
		if len(k) > 4 && strings.EqualFold(k[:4], "psu-") {
			out = append(out, strings.ToLower(k))
		}
	}
	return out
}

// CheckDigest checks the RFC 3230 Digest header against the body as received.
func CheckDigest(h http.Header, body []byte) error {
	d := h.Get("Digest")
	if d == "" {
		return Reject(ReasonDigestMissing, "the request has no Digest header")
	}
	alg, val, ok := strings.Cut(d, "=")
	if !ok {
		return Reject(ReasonDigestMismatch, "malformed Digest header %q", d)
	}
	var sum []byte
	switch strings.ToUpper(alg) {
	case "SHA-256":
		s := sha256.Sum256(body)
		sum = s[:]
	case "SHA-512":
		s := sha512.Sum512(body)
		sum = s[:]
	default:
		return Reject(ReasonDigestMismatch, "Digest algorithm %q not accepted; use SHA-256 or SHA-512", alg)
	}
	if val != base64.StdEncoding.EncodeToString(sum) {
		return Reject(ReasonDigestMismatch, "Digest %s does not match the received body (%d bytes)", d, len(body))
	}
	return nil
}

// CheckDate checks that the Date header is present and within skew of now (skew 0: presence only).
func CheckDate(h http.Header, now time.Time, skew time.Duration) error {
	d := h.Get("Date")
	if d == "" {
		return Reject(ReasonDate, "the request has no Date header")
	}
	t, err := http.ParseTime(d)
	if err != nil {
		return Reject(ReasonDate, "Date %q is not an HTTP date", d)
	}
	if skew > 0 && (t.Before(now.Add(-skew)) || t.After(now.Add(skew))) {
		return Reject(ReasonDate, "Date %q is more than %s from the server's clock", d, skew)
	}
	return nil
}

// Verify checks the signature with go-fed/httpsig against pub.
func Verify(r *http.Request, p *Params, pub crypto.PublicKey) error {
	var alg httpsig.Algorithm
	switch p.Algorithm {
	case "rsa-sha256":
		alg = httpsig.RSA_SHA256
	case "rsa-sha512":
		alg = httpsig.RSA_SHA512
	default:
		return Reject(ReasonAlgorithm, "algorithm %q not accepted; use rsa-sha256 or rsa-sha512", p.Algorithm)
	}
	if _, ok := pub.(*rsa.PublicKey); !ok {
		return Reject(ReasonAlgorithm, "algorithm %q needs an RSA key, the signing certificate holds %T", p.Algorithm, pub)
	}
	// go-fed reads the header map; give it the decoded Signature header and the Host net/http keeps apart.
	c := r.Clone(r.Context())
	c.Header.Set("Signature", p.Raw)
	if c.Header.Get("Host") == "" {
		c.Header.Set("Host", r.Host)
	}
	v, err := httpsig.NewVerifier(c)
	if err != nil {
		return Reject(ReasonSignatureMalformed, "%v", err)
	}
	if err := v.Verify(pub, alg); err != nil {
		return Reject(ReasonSignatureInvalid, "the signature does not verify with the signing key: %v", err)
	}
	return nil
}

// Received is one request an emulator answered.
type Received struct {
	Time     time.Time
	Method   string
	Path     string
	Header   http.Header
	Body     []byte
	Accepted bool
	// Reason is "" when accepted, else a reason code followed by ": " and the detail.
	Reason string
}

// Recorder keeps what an emulator received; safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	received []Received
}

// Add records one request.
func (rc *Recorder) Add(r Received) {
	rc.mu.Lock()
	rc.received = append(rc.received, r)
	rc.mu.Unlock()
}

// Received returns a copy of what was recorded, oldest first.
func (rc *Recorder) Received() []Received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Received(nil), rc.received...)
}

// Counts returns how many requests were accepted and rejected, and the rejections by reason code.
func (rc *Recorder) Counts() (accepted, rejected int, byReason map[string]int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	byReason = map[string]int{}
	for _, r := range rc.received {
		if r.Accepted {
			accepted++
			continue
		}
		rejected++
		code, _, _ := strings.Cut(r.Reason, ":")
		byReason[code]++
	}
	return accepted, rejected, byReason
}

// AsRejection unwraps a *Rejection, or wraps another error as signature-invalid.
func AsRejection(err error) *Rejection {
	var rj *Rejection
	if errors.As(err, &rj) {
		return rj
	}
	return Reject(ReasonSignatureInvalid, "%v", err)
}
