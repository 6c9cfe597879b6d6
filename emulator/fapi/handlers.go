package fapi

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// par serves the pushed authorization request endpoint (RFC 9126): client
// authentication, then the authorization request's parameters, plain or in
// a signed request object (RFC 9101). FAPI 2.0: response_type code, a
// registered redirect_uri and an S256 code challenge.
func (s *Server) par(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.PARRequests++
	id, c, err := s.clientAuth(r)
	if err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return
	}
	params := map[string]string{}
	for k := range r.PostForm {
		params[k] = r.PostForm.Get(k)
	}
	if ro := r.PostForm.Get("request"); ro != "" {
		var cl map[string]any
		if _, err := parseJWT(ro, c.Key, &cl); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request_object", err.Error())
			return
		}
		aud, _ := cl["aud"].(string)
		if cl["iss"] != id || aud != s.issuer || cl["client_id"] != id {
			oauthError(w, http.StatusBadRequest, "invalid_request_object", "iss, client_id and aud must be the client and the issuer")
			return
		}
		if exp, _ := cl["exp"].(float64); int64(exp) <= s.now().Unix() {
			oauthError(w, http.StatusBadRequest, "invalid_request_object", "expired")
			return
		}
		params = map[string]string{}
		for k, v := range cl {
			if str, ok := v.(string); ok {
				params[k] = str
			}
		}
	}
	switch {
	case params["request_uri"] != "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "request_uri is not allowed at the PAR endpoint")
	case params["response_type"] != "code":
		oauthError(w, http.StatusBadRequest, "unsupported_response_type", "response_type must be code")
	case !slices.Contains(c.RedirectURIs, params["redirect_uri"]):
		oauthError(w, http.StatusBadRequest, "invalid_request", "redirect_uri is not registered")
	case params["code_challenge_method"] != "S256" || len(params["code_challenge"]) != 43:
		oauthError(w, http.StatusBadRequest, "invalid_request", "an S256 code_challenge is required")
	default:
		uri := "urn:ietf:params:oauth:request_uri:" + random()
		s.requests[uri] = &pushed{client: id, params: params, expires: s.now().Add(90 * time.Second)}
		writeJSON(w, http.StatusCreated, map[string]any{"request_uri": uri, "expires_in": 90})
	}
}

// authorize serves the authorization endpoint: only client_id and a
// request_uri from PAR. The customer logs in as the psu query parameter
// (the emulator's login page), and the browser is sent back with code,
// state and iss (RFC 9207).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	p := s.requests[q.Get("request_uri")]
	delete(s.requests, q.Get("request_uri"))
	if p == nil || p.client != q.Get("client_id") || s.now().After(p.expires) {
		s.mu.Unlock()
		http.Error(w, "a pushed authorization request is required (unknown, used or expired request_uri)", http.StatusBadRequest)
		return
	}
	psu := q.Get("psu")
	if psu == "" {
		s.mu.Unlock()
		http.Error(w, "log in: add psu=<customer>", http.StatusUnauthorized)
		return
	}
	code := random()
	s.codes[code] = &grant{client: p.client, psu: psu, scope: p.params["scope"], redirect: p.params["redirect_uri"],
		challenge: p.params["code_challenge"], jkt: p.params["dpop_jkt"], expires: s.now().Add(60 * time.Second)}
	s.issued = append(s.issued, code)
	iss := s.issuer
	s.mu.Unlock()
	back, _ := url.Parse(p.params["redirect_uri"])
	v := back.Query()
	v.Set("code", code)
	if st := p.params["state"]; st != "" {
		v.Set("state", st)
	}
	v.Set("iss", iss)
	back.RawQuery = v.Encode()
	http.Redirect(w, r, back.String(), http.StatusSeeOther)
}

// token serves the token endpoint: authorization_code (PKCE, one use),
// refresh_token and client_credentials, each with client authentication and,
// for a DPoP client, a proof whose key the token is bound to.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	gt := r.PostForm.Get("grant_type")
	s.stats.TokenRequests[gt]++
	id, c, err := s.clientAuth(r)
	if err != nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", err.Error())
		return
	}
	var jkt string
	if c.DPoP || r.Header.Get("DPoP") != "" {
		jkt, err = s.dpopProof(r, "as", htu(r), "")
		if errors.Is(err, errUseNonce) {
			s.stats.NonceChallenges["as"]++
			w.Header().Set("DPoP-Nonce", s.currentNonce("as").cur)
			oauthError(w, http.StatusBadRequest, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof")
			return
		}
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", err.Error())
			return
		}
	}
	var g *grant
	switch gt {
	case "authorization_code":
		g = s.codes[r.PostForm.Get("code")]
		switch {
		case g == nil || g.used || s.now().After(g.expires) || g.client != id:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
			return
		case g.redirect != r.PostForm.Get("redirect_uri"):
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request's")
			return
		case s256(r.PostForm.Get("code_verifier")) != g.challenge:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
			return
		case g.jkt != "" && g.jkt != jkt:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "DPoP key differs from dpop_jkt")
			return
		}
		g.used = true
		if g.jkt != "" {
			s.stats.DPoPJKTExchanges++
		}
	case "refresh_token":
		g = s.refresh[r.PostForm.Get("refresh_token")]
		if g == nil || g.client != id {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown refresh token")
			return
		}
	case "client_credentials":
		g = &grant{client: id, scope: r.PostForm.Get("scope")}
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type "+gt)
		return
	}
	at := &accessToken{client: id, psu: g.psu, scope: g.scope, jkt: jkt, expires: s.now().Add(s.cfg.AccessTTL)}
	if c.CertificateBound {
		if at.x5t = certThumbprint(r); at.x5t == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "certificate-bound tokens need a client certificate")
			return
		}
	}
	tok := random()
	s.access[tok] = at
	s.issued = append(s.issued, tok)
	typ := "Bearer"
	if jkt != "" {
		typ = "DPoP"
	}
	out := map[string]any{"access_token": tok, "token_type": typ, "expires_in": int(s.cfg.AccessTTL.Seconds()), "scope": g.scope}
	if gt == "authorization_code" {
		rt := random()
		s.refresh[rt] = g
		s.issued = append(s.issued, rt)
		out["refresh_token"] = rt
	}
	if s.cfg.NonceEvery > 0 {
		w.Header().Set("DPoP-Nonce", s.currentNonce("as").cur)
	}
	writeJSON(w, http.StatusOK, out)
}

// resource serves the accounts and payments endpoints: the access token
// must be live and presented as its binding requires — a DPoP token as
// "DPoP" with a proof by the bound key (ath, htm, htu, nonce), a
// certificate-bound token over a connection presenting that certificate.
func (s *Server) resource(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refuse := func(reason, challenge string) {
		s.stats.Refused[reason]++
		if challenge != "" {
			w.Header().Set("WWW-Authenticate", challenge)
		}
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": reason})
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	at := s.access[tok]
	if at == nil || !s.now().Before(at.expires) {
		refuse("unknown or expired token", `Bearer error="invalid_token"`)
		return
	}
	if at.jkt != "" {
		if !strings.EqualFold(scheme, "DPoP") {
			refuse("DPoP-bound token presented as "+scheme, `DPoP error="invalid_token", algs="PS256 ES256"`)
			return
		}
		jkt, err := s.dpopProof(r, "rs", htu(r), tok)
		if errors.Is(err, errUseNonce) {
			s.stats.NonceChallenges["rs"]++
			w.Header().Set("DPoP-Nonce", s.currentNonce("rs").cur)
			w.Header().Set("WWW-Authenticate", `DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "use_dpop_nonce"})
			return
		}
		if err != nil {
			refuse(err.Error(), `DPoP error="invalid_dpop_proof"`)
			return
		}
		if jkt != at.jkt {
			refuse("DPoP proof key is not the token's", `DPoP error="invalid_token"`)
			return
		}
	} else if !strings.EqualFold(scheme, "Bearer") {
		refuse("token scheme "+scheme, `Bearer error="invalid_token"`)
		return
	}
	if at.x5t != "" && certThumbprint(r) != at.x5t {
		refuse("client certificate is not the one the token is bound to", `Bearer error="invalid_token"`)
		return
	}
	s.stats.Accepted++
	if s.cfg.NonceEvery > 0 && at.jkt != "" {
		w.Header().Set("DPoP-Nonce", s.currentNonce("rs").cur)
	}
	writeJSON(w, http.StatusOK, map[string]any{"client": at.client, "psu": at.psu, "path": r.URL.Path,
		"accounts": []map[string]string{{"resourceId": "acc-1", "iban": "GB33BUKB20201555555555"}}})
}
