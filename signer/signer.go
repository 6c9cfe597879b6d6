package signer

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// Signer adds the signing headers (Digest or Content-Digest, Date, X-Request-ID, Signature, Signature-Input,
// certificate header ..., or x-jws-signature on profile ob-detached-jws, and x-fapi-interaction-id) to req, whose body is exactly `body` (nil/empty for bodiless requests). It may be
// called concurrently. req.URL has the upstream path+query; req.Host is the upstream host.
type Signer interface {
	Sign(req *http.Request, body []byte) error
}

// KeySource returns the current signing key and certificate. tls.Certificate.PrivateKey is a crypto.Signer;
// Leaf is the parsed signing certificate (may be nil for keys without certificate).
type KeySource interface {
	Load() *tls.Certificate
}

// StaticKey is a KeySource that always returns the same key.
type StaticKey struct{ Cert *tls.Certificate }

// Load implements KeySource.
func (k StaticKey) Load() *tls.Certificate { return k.Cert }

// New validates opts against the current key and returns the route's Signer.
func New(opts Options, keys KeySource) (Signer, error) {
	return newSigner(opts, keys, time.Now)
}

func newSigner(opts Options, keys KeySource, now func() time.Time) (*signer, error) {
	if keys == nil {
		return nil, verr("key", "no key source")
	}
	p, err := opts.plan()
	if err != nil {
		return nil, err
	}
	s := &signer{p: p, keys: keys, now: now, newID: func() string { return uuid.New().String() }}
	for _, h := range p.headers {
		s.headers = append(s.headers, covered{name: h, canon: canonical(h)})
	}
	for _, h := range p.optional {
		s.optional = append(s.optional, covered{name: h, canon: canonical(h)})
	}
	s.canon = make(map[string]string, len(s.headers)+len(s.optional)+len(stetPSUOrder))
	for _, c := range append(append([]covered(nil), s.headers...), s.optional...) {
		if c.canon != "" {
			s.canon[c.name] = c.canon
		}
	}
	for _, n := range stetPSUOrder {
		s.canon[n] = textproto.CanonicalMIMEHeaderKey(n)
	}
	st, err := p.keyState(keys.Load(), now())
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	return s, nil
}

// covered is one covered header or component, with its canonical header key precomputed.
type covered struct {
	name  string // lower case as it appears in the signature
	canon string // http.Header key
}

func canonical(name string) string {
	if strings.HasPrefix(name, "(") || strings.HasPrefix(name, "@") || name == "psu-*" {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

type signer struct {
	p        *plan
	keys     KeySource
	now      func() time.Time
	newID    func() string
	headers  []covered
	optional []covered
	canon    map[string]string // read-only after New
	state    atomic.Pointer[keyState]
	// signFn replaces the key's signature in tests (RFC 9421 hmac-sha256 vector); nil in production.
	signFn func(msg []byte) ([]byte, error)
}

// keyState is what Sign needs for one signing key, computed when the key is first seen.
type keyState struct {
	key      *tls.Certificate
	signer   crypto.Signer
	leaf     *x509.Certificate
	alg      *algorithm
	keyID    string
	certB64  string // base64 DER of the signing certificate, when a certificate header is configured
	sigStart string // cavage: `keyId="…",algorithm="…"`; rfc9421: `;keyid="…";alg="…";tag="…"`
	// ob-detached-jws: the JWS algorithm and the http://openbanking.org.uk/iss claim (keyID is the kid).
	jwsAlg    string
	jwsIssuer string
}

func newKeyState(p *plan, key *tls.Certificate, sk crypto.Signer, cert *x509.Certificate, alg *algorithm, keyID string) *keyState {
	st := &keyState{key: key, signer: sk, leaf: cert, alg: alg, keyID: keyID}
	if p.certHeader != "" && cert != nil {
		st.certB64 = base64.StdEncoding.EncodeToString(cert.Raw)
	}
	if p.cavage {
		st.sigStart = `keyId="` + keyID + `",algorithm="` + alg.name + `"`
	} else {
		st.sigStart = `;keyid="` + keyID + `"`
		if p.includeAlg {
			st.sigStart += `;alg="` + alg.name + `"`
		}
		if p.tag != "" {
			st.sigStart += `;tag="` + p.tag + `"`
		}
	}
	return st
}

// current returns the state for the key the KeySource holds now, rebuilding it after a rotation.
func (s *signer) current(now time.Time) (*keyState, error) {
	key := s.keys.Load()
	st := s.state.Load()
	if st == nil || st.key != key {
		var err error
		if st, err = s.p.keyState(key, now); err != nil {
			return nil, err
		}
		s.state.Store(st)
	}
	if st.leaf != nil && (now.After(st.leaf.NotAfter) || now.Before(st.leaf.NotBefore)) {
		return nil, verr("certificate", "the signing certificate %q is valid from %s to %s, not now; install a current QSealC",
			st.leaf.Subject.String(), st.leaf.NotBefore.UTC().Format(time.RFC3339), st.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return st, nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// ErrMissingHeader is returned (wrapped) when a header the signature must cover is absent.
var ErrMissingHeader = errors.New("covered header missing")

// Sign implements Signer.
func (s *signer) Sign(req *http.Request, body []byte) (err error) {
	now := s.now()
	st, err := s.current(now)
	if err != nil {
		return err
	}
	h := req.Header
	if h == nil {
		h = make(http.Header)
		req.Header = h
	}
	// The span is opened on a copy of req sharing its header map.
	if sp := tracing.Recording(req.Context()); sp != nil {
		req, sp = s.startSpan(req, st)
		defer func() {
			if err != nil {
				tracing.Fail(sp, "signing")
			}
			sp.End()
		}()
	}
	if s.p.interactionID {
		setInteractionID(h, s.newID)
	}
	if s.p.jws != nil {
		return s.signJWS(req, body, st, now)
	}

	// Digest and Content-Digest share one hash of the body.
	var sumBuf [64]byte
	sum := s.p.digest.sum(sumBuf[:0], body)
	var b64Buf [88]byte
	b64 := b64Buf[:base64.StdEncoding.EncodedLen(len(sum))]
	base64.StdEncoding.Encode(b64, sum)
	h["Digest"] = []string{s.p.digest.digestPrefix() + string(b64)}
	if !s.p.cavage {
		h["Content-Digest"] = []string{s.p.digest.contentDigestKey() + "=:" + string(b64) + ":"}
	}
	if len(h["Date"]) == 0 {
		h["Date"] = []string{now.UTC().Format(http.TimeFormat)}
	}
	if len(h["X-Request-Id"]) == 0 {
		h["X-Request-Id"] = []string{s.newID()}
	}
	if s.p.certHeader != "" {
		h[canonical(s.p.certHeader)] = []string{st.certB64}
	}

	bp := bufPool.Get().(*[]byte)
	defer func() { *bp = (*bp)[:0]; bufPool.Put(bp) }()
	var names [24]string
	list := s.coveredNames(names[:0], h)
	if s.p.cavage {
		return s.signCavage(req, body, st, list, bp)
	}
	return s.signRFC9421(req, body, st, list, now, bp)
}

// coveredNames appends the covered names for this request: the fixed list, then optional headers present.
func (s *signer) coveredNames(dst []string, h http.Header) []string {
	for _, c := range s.headers {
		dst = append(dst, c.name)
	}
	for _, c := range s.optional {
		if c.name == "psu-*" {
			dst = appendPSUHeaders(dst, h, s.p.headers)
			continue
		}
		if len(h[c.canon]) > 0 && !contains(dst, c.name) {
			dst = append(dst, c.name)
		}
	}
	return dst
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// stetPSUOrder is the order of the psu-* headers in the 89C3 sandbox example; others follow sorted.
var stetPSUOrder = []string{"psu-ip-address", "psu-ip-port", "psu-http-method", "psu-date", "psu-user-agent",
	"psu-referer", "psu-accept", "psu-accept-charset", "psu-accept-encoding", "psu-accept-language"}

func appendPSUHeaders(dst []string, h http.Header, fixed []string) []string {
	start := len(dst)
	for k, v := range h {
		if len(v) == 0 || len(k) < 4 || !strings.EqualFold(k[:4], "psu-") {
			continue
		}
		l := strings.ToLower(k)
		if !contains(dst, l) && !contains(fixed, l) {
			dst = append(dst, l)
		}
	}
	added := dst[start:]
	if len(added) > 1 {
		sort.Slice(added, func(i, j int) bool {
			ri, rj := psuRank(added[i]), psuRank(added[j])
			if ri != rj {
				return ri < rj
			}
			return added[i] < added[j]
		})
	}
	return dst
}

func psuRank(name string) int {
	for i, n := range stetPSUOrder {
		if n == name {
			return i
		}
	}
	return len(stetPSUOrder)
}

// headerValues returns the values of a covered header, with the two that Go keeps outside req.Header.
// canon maps lower-case names to http.Header keys; names not in it are canonicalized here.
func headerValues(req *http.Request, body []byte, name string, canon map[string]string, scratch *[1]string) []string {
	switch name {
	case "host":
		if len(req.Header["Host"]) > 0 {
			return req.Header["Host"]
		}
		scratch[0] = req.Host
		if scratch[0] == "" && req.URL != nil {
			scratch[0] = req.URL.Host
		}
		return scratch[:]
	case "content-length":
		if v := req.Header["Content-Length"]; len(v) > 0 {
			return v
		}
		if len(body) > 0 {
			scratch[0] = strconv.Itoa(len(body))
			return scratch[:]
		}
		return nil
	}
	if k, ok := canon[name]; ok {
		return req.Header[k]
	}
	return req.Header[textproto.CanonicalMIMEHeaderKey(name)]
}

// appendFieldValues writes header values as draft-cavage-10 section 2.3 and RFC 9421 section 2.1 want them:
// leading and trailing whitespace removed, obs-fold replaced by one space, values joined by ", ".
func appendFieldValues(dst []byte, values []string) []byte {
	for i, v := range values {
		if i > 0 {
			dst = append(dst, ", "...)
		}
		dst = appendFieldValue(dst, v)
	}
	return dst
}

func appendFieldValue(dst []byte, v string) []byte {
	v = strings.Trim(v, " \t\r\n")
	for {
		i := strings.IndexAny(v, "\r\n")
		if i < 0 {
			return append(dst, v...)
		}
		dst = append(dst, strings.TrimRight(v[:i], " \t")...)
		dst = append(dst, ' ')
		v = strings.TrimLeft(v[i:], " \t\r\n")
	}
}

// requestTarget is the :path pseudo-header: the escaped path and the query as sent.
func requestTarget(req *http.Request) string {
	if req.URL == nil {
		return "/"
	}
	return req.URL.RequestURI()
}

// AppendSigningString appends the draft-cavage-http-signatures-10 section 2.3 signing string for the
// covered headers (lower case) of req to dst.
func AppendSigningString(dst []byte, req *http.Request, body []byte, headers []string) ([]byte, error) {
	return appendSigningString(dst, req, body, headers, nil)
}

func appendSigningString(dst []byte, req *http.Request, body []byte, headers []string, canon map[string]string) ([]byte, error) {
	var scratch [1]string
	for i, name := range headers {
		if i > 0 {
			dst = append(dst, '\n')
		}
		if name == "(request-target)" {
			dst = append(dst, "(request-target): "...)
			for j := 0; j < len(req.Method); j++ {
				c := req.Method[j]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				dst = append(dst, c)
			}
			dst = append(dst, ' ')
			dst = append(dst, requestTarget(req)...)
			continue
		}
		values := headerValues(req, body, name, canon, &scratch)
		if len(values) == 0 {
			return dst, fmt.Errorf("signing: %w: %q is covered by the signature but the request has no such header", ErrMissingHeader, name)
		}
		dst = append(dst, name...)
		dst = append(dst, ": "...)
		dst = appendFieldValues(dst, values)
	}
	return dst, nil
}

func (s *signer) sign(ctx context.Context, st *keyState, msg []byte) ([]byte, error) {
	if s.signFn != nil {
		return s.signFn(msg)
	}
	return st.alg.sign(boundTo(ctx, st.signer), msg)
}

func (s *signer) signCavage(req *http.Request, body []byte, st *keyState, list []string, bp *[]byte) error {
	buf, err := appendSigningString((*bp)[:0], req, body, list, s.canon)
	*bp = buf[:0]
	if err != nil {
		return err
	}
	sig, err := s.sign(req.Context(), st, buf)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	// Reuse the buffer after the signing string for the header value.
	out := buf[len(buf):]
	out = append(out, st.sigStart...)
	// Without a headers parameter the draft covers Date alone (section 2.1.3); write it out otherwise.
	if !(len(list) == 1 && list[0] == "date") {
		out = append(out, `,headers="`...)
		for i, n := range list {
			if i > 0 {
				out = append(out, ' ')
			}
			out = append(out, n...)
		}
		out = append(out, '"')
	}
	out = append(out, `,signature="`...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	out = append(out, '"')
	value := string(out)
	if s.p.rfc2047 && !isASCII(value) {
		value = EncodeRFC2047(value)
	}
	req.Header["Signature"] = []string{value}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// EncodeRFC2047 wraps a header value as an RFC 2047 encoded word, =?utf-8?B?<base64>?=, as the Berlin Group
// asks for a Signature header that is not ASCII.
func EncodeRFC2047(v string) string {
	return "=?utf-8?B?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

// DecodeRFC2047 undoes EncodeRFC2047; a value that is not an encoded word is returned unchanged.
func DecodeRFC2047(v string) (string, error) {
	if len(v) < 4 || !strings.HasPrefix(v, "=?") || !strings.HasSuffix(v, "?=") {
		return v, nil
	}
	parts := strings.SplitN(v[2:len(v)-2], "?", 3)
	if len(parts) != 3 {
		return "", errors.New("malformed RFC 2047 encoded word")
	}
	if !strings.EqualFold(parts[0], "utf-8") && !strings.EqualFold(parts[0], "iso-8859-1") {
		return "", fmt.Errorf("RFC 2047 charset %q not supported", parts[0])
	}
	if !strings.EqualFold(parts[1], "B") {
		return "", fmt.Errorf("RFC 2047 encoding %q not supported; use B", parts[1])
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return "", fmt.Errorf("RFC 2047 base64: %w", err)
	}
	if strings.EqualFold(parts[0], "iso-8859-1") {
		r := make([]rune, len(raw))
		for i, b := range raw {
			r[i] = rune(b)
		}
		return string(r), nil
	}
	return string(raw), nil
}
