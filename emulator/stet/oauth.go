package stet

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuthConfig switches on the emulated 89C3 authorization server:
// GET /stet/psd2/oauth/authorize, POST /stet/psd2/oauth/token (grants
// authorization_code, refresh_token, client_credentials; mTLS required) and
// POST /stet/psd2/oauth/revoke. With it, the account endpoints require a
// valid access token.
type OAuthConfig struct {
	// Clients are the registered TPP clients, by client_id.
	Clients map[string]Client
	// AccessTTL and RefreshTTL default to 1 hour and 90 days, as at BPCE.
	AccessTTL, RefreshTTL time.Duration
	// Rotate makes each refresh return a new refresh token and burn the old
	// one; otherwise the same refresh token comes back (BPCE).
	Rotate bool
}

// Client is a registered client and how it must authenticate.
type Client struct {
	// Method is client_secret_basic, client_secret_post, tls_client_auth or private_key_jwt.
	Method string
	Secret string
	// CertSubject is the common name of the client certificate (tls_client_auth).
	CertSubject string
	// Key verifies private_key_jwt assertions (ECDSA P-256 or RSA public key).
	Key crypto.PublicKey
}

type grant struct {
	client, psu, scope string
	redirect, pkce     string
	expires            time.Time
	used               bool
}

type access struct {
	psu, client string
	expires     time.Time
	revoked     bool
}

type authServer struct {
	now func() time.Time

	mu        sync.Mutex
	cfg       OAuthConfig
	codes     map[string]*grant
	refresh   map[string]*grant
	access    map[string]*access
	jtis      map[string]bool
	refreshes int
	issued    []string // every token and code issued, for leak checks
	throttle  int
	tokenReqs []url.Values
}

func newAuthServer(cfg OAuthConfig, now func() time.Time) *authServer {
	if cfg.AccessTTL == 0 {
		cfg.AccessTTL = time.Hour
	}
	if cfg.RefreshTTL == 0 {
		cfg.RefreshTTL = 90 * 24 * time.Hour
	}
	return &authServer{now: now, cfg: cfg, codes: map[string]*grant{}, refresh: map[string]*grant{},
		access: map[string]*access{}, jtis: map[string]bool{}}
}

func (a *authServer) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /stet/psd2/oauth/authorize", a.authorize)
	mux.HandleFunc("POST /stet/psd2/oauth/token", a.token)
	mux.HandleFunc("POST /stet/psd2/oauth/revoke", a.revoke)
}

func (a *authServer) newSecret(prefix string) string {
	var b [20]byte
	_, _ = rand.Read(b[:])
	s := prefix + hex.EncodeToString(b[:])
	a.issued = append(a.issued, s)
	return s
}

// authorize is the scripted customer login: ?psu=NAME approves at once,
// psu=deny refuses; without psu it answers the login page.
func (a *authServer) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.cfg.Clients[q.Get("client_id")]; !ok || q.Get("response_type") != "code" {
		http.Error(w, "unknown client_id or response_type is not code", http.StatusBadRequest)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" {
		http.Error(w, "redirect_uri is required", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
		http.Error(w, "only S256 PKCE is supported", http.StatusBadRequest)
		return
	}
	psu := q.Get("psu")
	if psu == "" {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><body><form>Identifiant: <input name=psu></form></body></html>"))
		return
	}
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	if psu == "deny" {
		back.Set("error", "access_denied")
	} else {
		code := a.newSecret("code-")
		a.codes[code] = &grant{client: q.Get("client_id"), psu: psu, scope: q.Get("scope"), redirect: q.Get("redirect_uri"),
			pkce: q.Get("code_challenge"), expires: a.now().Add(2 * time.Minute)}
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound) //nolint:gosec // G710: the emulator redirects to the registered client's redirect_uri, as the bank does
}

func oauthErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func (a *authServer) token(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		oauthErr(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthErr(w, http.StatusBadRequest, "invalid_request")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokenReqs = append(a.tokenReqs, r.PostForm)
	if a.throttle > 0 {
		a.throttle--
		w.Header().Set("Retry-After", "7")
		oauthErr(w, http.StatusTooManyRequests, "slow_down")
		return
	}
	client, ok := a.authenticate(r)
	if !ok {
		oauthErr(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	now := a.now()
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		a.issue(w, client, "", r.PostForm.Get("scope"), "")
	case "authorization_code":
		g := a.codes[r.PostForm.Get("code")]
		if g == nil || g.used || now.After(g.expires) || g.client != client || g.redirect != r.PostForm.Get("redirect_uri") ||
			!pkceOK(g.pkce, r.PostForm.Get("code_verifier")) {
			oauthErr(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		g.used = true
		rt := a.newSecret("rt-")
		a.refresh[rt] = &grant{client: client, psu: g.psu, scope: g.scope, expires: now.Add(a.cfg.RefreshTTL)}
		a.issue(w, client, g.psu, g.scope, rt)
	case "refresh_token":
		old := r.PostForm.Get("refresh_token")
		g := a.refresh[old]
		if g == nil || g.used || now.After(g.expires) || g.client != client {
			oauthErr(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		a.refreshes++
		rt := old
		if a.cfg.Rotate {
			g.used = true
			rt = a.newSecret("rt-")
			a.refresh[rt] = &grant{client: client, psu: g.psu, scope: g.scope, expires: g.expires}
		}
		a.issue(w, client, g.psu, g.scope, rt)
	default:
		oauthErr(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// issue answers a new access token, revoking the customer's previous ones
// (BPCE: one valid access token per customer and TPP).
func (a *authServer) issue(w http.ResponseWriter, client, psu, scope, rt string) {
	if psu != "" {
		for _, at := range a.access {
			if at.psu == psu && at.client == client {
				at.revoked = true
			}
		}
	}
	at := a.newSecret("at-")
	a.access[at] = &access{psu: psu, client: client, expires: a.now().Add(a.cfg.AccessTTL)}
	body := map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(a.cfg.AccessTTL / time.Second), "scope": scope}
	if rt != "" {
		body["refresh_token"] = rt
		body["scope"] = strings.TrimSpace(scope + " offline_access")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

func pkceOK(challenge, verifier string) bool {
	if challenge == "" {
		return verifier == ""
	}
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:]) == challenge
}

// revoke is RFC 7009: a refresh token is burnt with its access tokens; an
// unknown token is not an error.
func (a *authServer) revoke(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.ParseForm() != nil {
		oauthErr(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	client, ok := a.authenticate(r)
	if !ok {
		oauthErr(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	tok := r.PostForm.Get("token")
	if g := a.refresh[tok]; g != nil && g.client == client {
		g.used = true
		for _, at := range a.access {
			if at.psu == g.psu && at.client == client {
				at.revoked = true
			}
		}
	}
	if at := a.access[tok]; at != nil && at.client == client {
		at.revoked = true
	}
	w.WriteHeader(http.StatusOK)
}

// validAccess reports the customer of a valid access token.
func (a *authServer) validAccess(header string) (psu string, ok bool) {
	tok, found := strings.CutPrefix(header, "Bearer ")
	if !found {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	at := a.access[tok]
	if at == nil || at.revoked || a.now().After(at.expires) {
		return "", false
	}
	return at.psu, true
}

func constEq(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
