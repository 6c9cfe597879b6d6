package fapitest

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)
	formPrompt = regexp.MustCompile(`name="prompt" value="([a-z]+)"`)
)

// Login plays the customer in a browser: it opens authorizeURL (the
// authorization endpoint with client_id and request_uri), signs in as
// subject on the authorization server's login form, grants the consent, and
// returns the URL the authorization server redirects to — the client's
// redirect_uri with code, state and iss — without following it. It fails
// the test when the authorization server answers with an error page or the
// flow does not end at a URL outside the authorization server.
func (s *Server) Login(t testing.TB, authorizeURL, subject string) string {
	t.Helper()
	target, err := s.login(authorizeURL, subject)
	if err != nil {
		t.Fatalf("fapitest: login: %v", err)
	}
	return target
}

func (s *Server) login(authorizeURL, subject string) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	client := s.HTTPClient(nil)
	client.Jar = jar
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	method, next, form := http.MethodGet, authorizeURL, url.Values(nil)
	for range 12 {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, next, body)
		if err != nil {
			return "", err
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		page, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := req.URL.Parse(resp.Header.Get("Location"))
			if err != nil {
				return "", fmt.Errorf("%s %s: redirect: %w", method, req.URL.Path, err)
			}
			if !strings.HasPrefix(loc.String(), s.Issuer+"/") {
				return loc.String(), nil
			}
			method, next, form = http.MethodGet, loc.String(), nil
		case resp.StatusCode == http.StatusOK && formAction.Match(page):
			action, err := req.URL.Parse(html.UnescapeString(string(formAction.FindSubmatch(page)[1])))
			if err != nil {
				return "", fmt.Errorf("form action: %w", err)
			}
			prompt := formPrompt.FindSubmatch(page)
			if prompt == nil {
				return "", fmt.Errorf("%s: a form without a prompt", req.URL.Path)
			}
			switch string(prompt[1]) {
			case "login":
				form = url.Values{"prompt": {"login"}, "login": {subject}, "password": {"any"}}
			case "consent":
				form = url.Values{"prompt": {"consent"}}
			default:
				return "", fmt.Errorf("%s: unknown prompt %q", req.URL.Path, prompt[1])
			}
			method, next = http.MethodPost, action.String()
		default:
			return "", fmt.Errorf("%s %s: %d %s", method, req.URL.Path, resp.StatusCode, page)
		}
	}
	return "", fmt.Errorf("no redirect out of %s after 12 steps", s.Issuer)
}
