package bankingcircle

import (
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the token's thumbprint claim is SHA-1, as Banking Circle's is
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TokenResponse is the authorize endpoint's 200 body. ExpiresIn is a JSON
// string holding whole seconds ("300"), as the real service sends it.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   string `json:"expires_in"`
	TokenType   string `json:"token_type"`
}

// ErrorResponse is the body of every error the emulator answers.
type ErrorResponse struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// Error codes in ErrorResponse.Error.
const (
	CodeIPNotWhitelisted = "ip_not_whitelisted" // 403
	CodeUnauthorized     = "unauthorized"       // 401 on the authorization host
	CodeInvalidToken     = "invalid_token"      // 401 on the API host
	CodeTooManyRequests  = "too_many_requests"  // 429
	CodeNotFound         = "not_found"          // 404
	CodeBadRequest       = "bad_request"        // 400
	CodeMethodNotAllowed = "method_not_allowed" // 405
)

// Paging limits of the list endpoints, from Banking Circle's API reference.
const (
	DefaultPageSize = 50
	MaxPageSize     = 5000
)

type reply struct {
	status int
	header http.Header
	body   any
}

func errReply(status int, code, msg string) reply {
	return reply{status: status, body: ErrorResponse{Error: code, Message: msg}}
}

func (r reply) write(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(r.status)
	json.NewEncoder(w).Encode(r.body) //nolint:errcheck // the client went away
}

func (s *Server) newAuthMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(AuthorizePath, s.handleAuthorize)
	mux.HandleFunc("/", s.handleUnknown)
	return mux
}

func (s *Server) newAPIMux(withAuthorize bool) http.Handler {
	mux := http.NewServeMux()
	if withAuthorize {
		mux.HandleFunc(AuthorizePath, s.handleAuthorize)
	}
	mux.HandleFunc(AccountsPath, s.handleAccounts)
	mux.HandleFunc(AccountsPath+"/{accountId}", s.handleAccount)
	mux.HandleFunc("/", s.handleAPIUnknown)
	return mux
}

func (s *Server) handleUnknown(w http.ResponseWriter, r *http.Request) {
	errReply(http.StatusNotFound, CodeNotFound, "The emulator does not serve "+r.URL.Path+".").write(w)
}

// delay waits d unless the client gives up first; it reports whether to go on.
// A client that gave up gets no answer at all: the handler aborts and the
// connection is closed, as a hung server's would be (an empty 200 written on
// the way out could otherwise race the client's own deadline).
func delay(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		panic(http.ErrAbortHandler)
	}
}

// handleAuthorize serves GET /api/v1/authorizations/authorize. Checks, in
// order: source IP allowlist (403), forced 429s, the per-IP threshold (429),
// method (405), Basic credentials (401); then it issues a token.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	f, done := s.authorizeFault(w, r)
	if done {
		return
	}
	ip := clientIP(r)
	s.mu.Lock()
	now := s.now()
	ttl := s.ttl
	if f.Kind == FaultShortExpiry {
		s.ttl = max(f.Expiry, time.Second)
	}
	rep := s.authorizeLocked(r, ip, now)
	s.ttl = ttl
	s.stats.TokenRequests++
	switch rep.status {
	case http.StatusOK:
		s.stats.TokensIssued++
	case http.StatusTooManyRequests:
		s.stats.TokenThrottled++
	case http.StatusUnauthorized:
		s.stats.TokenUnauthorized++
	case http.StatusForbidden:
		s.stats.Forbidden++
	}
	s.tokenReqs = append(s.tokenReqs, TokenRequest{Time: now, ClientIP: ip, Status: rep.status})
	s.mu.Unlock()
	rep.write(w)
}

func (s *Server) authorizeLocked(r *http.Request, ip netip.Addr, now time.Time) reply {
	if !s.allowedLocked(ip) {
		return forbidden(ip)
	}
	if s.forced429 > 0 {
		s.forced429--
		return tooMany(s.forcedRetry)
	}
	if retry, ok := s.admitLocked(ip, now); !ok {
		return tooMany(retry)
	}
	if r.Method != http.MethodGet {
		return reply{
			status: http.StatusMethodNotAllowed,
			header: http.Header{"Allow": {http.MethodGet}},
			body:   ErrorResponse{Error: CodeMethodNotAllowed, Message: "Use GET."},
		}
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		rep := errReply(http.StatusUnauthorized, CodeUnauthorized,
			"Missing Basic authorization: send base64(username:password) in the Authorization header.")
		rep.header = http.Header{"Www-Authenticate": {`Basic realm="Banking Circle"`}}
		return rep
	}
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.username)) == 1
	passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(s.password)) == 1
	if !userOK || !passOK {
		rep := errReply(http.StatusUnauthorized, CodeUnauthorized, "Invalid username or password.")
		rep.header = http.Header{"Www-Authenticate": {`Basic realm="Banking Circle"`}}
		return rep
	}
	token := newToken(now, s.ttl, r)
	s.pruneTokensLocked(now)
	s.tokens[token] = now.Add(s.ttl)
	s.issued = append(s.issued, token)
	return reply{status: http.StatusOK, body: TokenResponse{
		AccessToken: token,
		ExpiresIn:   strconv.FormatInt(int64(s.ttl/time.Second), 10),
		TokenType:   "Bearer",
	}}
}

// admitLocked applies the per-IP per-minute threshold. It counts the request
// when admitted; otherwise it returns how long until one would be.
func (s *Server) admitLocked(ip netip.Addr, now time.Time) (time.Duration, bool) {
	if s.perMinute <= 0 {
		return 0, true
	}
	switch s.window {
	case FixedWindow:
		minute := now.Truncate(time.Minute)
		c := s.fixed[ip]
		if !c.minute.Equal(minute) {
			c = fixedCount{minute: minute}
		}
		if c.n >= s.perMinute {
			return minute.Add(time.Minute).Sub(now), false
		}
		c.n++
		s.fixed[ip] = c
		return 0, true
	default:
		times := s.sliding[ip]
		cut := 0
		for cut < len(times) && !times[cut].After(now.Add(-time.Minute)) {
			cut++
		}
		times = times[cut:]
		if len(times) >= s.perMinute {
			s.sliding[ip] = times
			return times[len(times)-s.perMinute].Add(time.Minute).Sub(now), false
		}
		s.sliding[ip] = append(times, now)
		return 0, true
	}
}

func (s *Server) pruneTokensLocked(now time.Time) {
	if len(s.tokens) < 1024 {
		return
	}
	for t, exp := range s.tokens {
		if !now.Before(exp) {
			delete(s.tokens, t)
		}
	}
}

func forbidden(ip netip.Addr) reply {
	return errReply(http.StatusForbidden, CodeIPNotWhitelisted, fmt.Sprintf("Your IP %s is not whitelisted", ip))
}

func tooMany(retryAfter time.Duration) reply {
	rep := errReply(http.StatusTooManyRequests, CodeTooManyRequests, "Rate limit is exceeded.")
	if retryAfter > 0 {
		secs := int64(math.Ceil(retryAfter.Seconds()))
		rep.header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
		rep.body = ErrorResponse{Error: CodeTooManyRequests,
			Message: fmt.Sprintf("Rate limit is exceeded. Try again in %d seconds.", secs)}
	}
	return rep
}

// newToken returns a string shaped like the real service's tokens, an RS256
// JWT ("eyJ0eXAiOiJKV1Qi..."): a header, claims including the client
// certificate's SHA-1 thumbprint, and a random 256-byte "signature" that
// makes every token unique. Nothing verifies it but the emulator's own store.
func newToken(now time.Time, ttl time.Duration, r *http.Request) string {
	enc := base64.RawURLEncoding
	header := `{"typ":"JWT","alg":"RS256","kid":"tokenproxy-emulator"}`
	claims := map[string]any{
		"iss":      "https://bankingcircle.emulator.invalid/v2.0/",
		"aud":      "c6f01248-bcfa-406a-a791-84b7142346c6",
		"iat":      now.Unix(),
		"nbf":      now.Unix(),
		"exp":      now.Add(ttl).Unix(),
		"name":     "API Testuser",
		"userType": "4",
		"ver":      "1.0",
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		sum := sha1.Sum(r.TLS.PeerCertificates[0].Raw) //nolint:gosec // an identifier, as in Banking Circle's tokens; not a security use
		claims["thumbprint"] = strings.ToUpper(hex.EncodeToString(sum[:]))
	}
	payload, _ := json.Marshal(claims) // a map of strings and ints always marshals
	sig := make([]byte, 256)
	rand.Read(sig)
	return enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig)
}

// apiGate runs the checks common to API-host endpoints: latency, counting,
// method, allowlist, bearer token. It returns the reply to send when the
// request must stop there.
func (s *Server) apiGate(w http.ResponseWriter, r *http.Request) (stop bool) {
	s.mu.Lock()
	latency := s.apiLatency
	s.mu.Unlock()
	if !delay(r.Context(), latency) {
		return true
	}
	ip := clientIP(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.APIRequests++
	if !s.allowedLocked(ip) {
		s.stats.Forbidden++
		forbidden(ip).write(w)
		return true
	}
	if r.Method != http.MethodGet {
		reply{
			status: http.StatusMethodNotAllowed,
			header: http.Header{"Allow": {http.MethodGet}},
			body:   ErrorResponse{Error: CodeMethodNotAllowed, Message: "Use GET."},
		}.write(w)
		return true
	}
	if rep, ok := s.checkBearerLocked(r); !ok {
		s.stats.APIUnauthorized++
		rep.write(w)
		return true
	}
	return false
}

func (s *Server) checkBearerLocked(r *http.Request) (reply, bool) {
	unauthorized := func(desc string) reply {
		rep := errReply(http.StatusUnauthorized, CodeInvalidToken, desc)
		rep.header = http.Header{"Www-Authenticate": {`Bearer error="invalid_token", error_description="` + desc + `"`}}
		return rep
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		rep := errReply(http.StatusUnauthorized, CodeInvalidToken, "Access token is missing: send Authorization: Bearer <access_token>.")
		rep.header = http.Header{"Www-Authenticate": {`Bearer`}}
		return rep, false
	}
	token = strings.TrimSpace(token)
	exp, known := s.tokens[token]
	switch {
	case !known:
		return unauthorized("Access token is invalid or revoked."), false
	case !s.now().Before(exp):
		delete(s.tokens, token)
		return unauthorized("Access token has expired."), false
	}
	return reply{}, true
}

func (s *Server) handleAPIUnknown(w http.ResponseWriter, r *http.Request) {
	if s.apiGate(w, r) {
		return
	}
	s.handleUnknown(w, r)
}

// handleAccounts serves GET /api/v1/accounts?PageNumber=&PageSize=&Currency=.
// Query keys match case-insensitively, as in the real (.NET) service.
func (s *Server) handleAccounts(w http.ResponseWriter, r *http.Request) {
	if s.apiGate(w, r) {
		return
	}
	q := r.URL.Query()
	page, bad := intParam(q, "PageNumber", 1, 1, math.MaxInt32)
	if bad != "" {
		s.finishAccounts(w, errReply(http.StatusBadRequest, CodeBadRequest, bad))
		return
	}
	size, bad := intParam(q, "PageSize", DefaultPageSize, 1, MaxPageSize)
	if bad != "" {
		s.finishAccounts(w, errReply(http.StatusBadRequest, CodeBadRequest, bad))
		return
	}
	if s.noAccess() {
		s.finishAccounts(w, noAccountsReply())
		return
	}
	currency := queryGet(q, "Currency")
	var matched []Account
	for _, a := range s.accounts {
		if currency == "" || strings.EqualFold(a.Currency, currency) {
			matched = append(matched, a)
		}
	}
	result := []Account{}
	if start := (page - 1) * size; start < len(matched) {
		result = matched[start:min(start+size, len(matched))]
	}
	s.finishAccounts(w, reply{status: http.StatusOK, body: AccountsPage{
		Result:   result,
		PageInfo: PageInfo{CurrentPage: page, PageSize: size},
	}})
}

// handleAccount serves GET /api/v1/accounts/{accountId}.
func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request) {
	if s.apiGate(w, r) {
		return
	}
	if s.noAccess() {
		s.finishAccounts(w, noAccountsReply())
		return
	}
	id := r.PathValue("accountId")
	for _, a := range s.accounts {
		if strings.EqualFold(a.AccountID, id) {
			s.finishAccounts(w, reply{status: http.StatusOK, body: a})
			return
		}
	}
	s.finishAccounts(w, errReply(http.StatusNotFound, CodeNotFound, "Account "+id+" was not found."))
}

func noAccountsReply() reply {
	return errReply(http.StatusNotFound, CodeNotFound,
		"No accounts found: the user has not been granted access to accounts.")
}

func (s *Server) noAccess() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.noAccountAccess
}

func (s *Server) finishAccounts(w http.ResponseWriter, rep reply) {
	s.mu.Lock()
	switch rep.status {
	case http.StatusOK:
		s.stats.AccountsServed++
	case http.StatusNotFound:
		s.stats.AccountsNotFound++
	}
	s.mu.Unlock()
	rep.write(w)
}

// queryGet returns the first value of key, matched case-insensitively.
func queryGet(q url.Values, key string) string {
	if v, ok := q[key]; ok && len(v) > 0 {
		return v[0]
	}
	for k, v := range q {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// intParam parses an optional integer query parameter; when it is malformed
// or out of range, the second result is the message for a 400.
func intParam(q url.Values, key string, def, lo, hi int) (int, string) {
	raw := queryGet(q, key)
	if raw == "" {
		return def, ""
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Sprintf("%s must be a whole number from %d to %d.", key, lo, hi)
	}
	return n, ""
}
