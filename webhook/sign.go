package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Headers of a delivery.
const (
	// HeaderSignature carries t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// "<t>.<body>" under the webhook's secret>.
	HeaderSignature = "Tokenproxy-Signature"
	// HeaderEventID is the event's id: receivers deduplicate by it.
	HeaderEventID = "Tokenproxy-Event-Id"
	// HeaderEventType is the event's type.
	HeaderEventType = "Tokenproxy-Event-Type"
)

// Sign is the Tokenproxy-Signature value of body sent at t under secret.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Errors of Verify.
var (
	// ErrBadSignature: no v1 signature in the header matches the body.
	ErrBadSignature = errors.New("the webhook signature does not match the body")
	// ErrStale: the signature's timestamp is outside the tolerance.
	ErrStale = errors.New("the webhook signature's timestamp is outside the tolerance (a replayed delivery?)")
)

// Verify checks a Tokenproxy-Signature header against body and secret,
// and that its timestamp is within tolerance of now (0: not checked). A
// header may carry several v1 values; one match suffices.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrBadSignature
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); tolerance > 0 && (d > tolerance || d < -tolerance) {
		return ErrStale
	}
	return nil
}
