package bankingcircle_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
)

// answer is one response, read and closed.
type answer struct {
	StatusCode int
	Header     http.Header
	Close      bool
}

// raw sends one request and returns the answer, or the transport error.
func raw(t *testing.T, c *http.Client, url, auth string, timeout time.Duration) (*answer, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &answer{StatusCode: resp.StatusCode, Header: resp.Header, Close: resp.Close}, b, err
}

func TestTokenFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault bankingcircle.Fault
		check func(t *testing.T, resp *answer, body []byte, err error)
	}{
		{"429 with Retry-After", bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 429, RetryAfter: 1500 * time.Millisecond},
			func(t *testing.T, resp *answer, _ []byte, err error) {
				if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" {
					t.Fatalf("got %v %v", resp, err)
				}
			}},
		{"429 without Retry-After", bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 429},
			func(t *testing.T, resp *answer, _ []byte, err error) {
				if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "" {
					t.Fatalf("got %v %v", resp, err)
				}
			}},
		{"500", bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 500},
			func(t *testing.T, resp *answer, body []byte, err error) {
				if err != nil || resp.StatusCode != 500 || !strings.Contains(string(body), "injected_fault") {
					t.Fatalf("got %v %q %v", resp, body, err)
				}
			}},
		{"slow past the client's patience", bankingcircle.Fault{Kind: bankingcircle.FaultSlow, Delay: time.Hour},
			func(t *testing.T, _ *answer, _ []byte, err error) {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("want a deadline error, got %v", err)
				}
			}},
		{"reset", bankingcircle.Fault{Kind: bankingcircle.FaultReset},
			func(t *testing.T, _ *answer, _ []byte, err error) {
				if !errors.Is(err, syscall.ECONNRESET) && (err == nil || !strings.Contains(err.Error(), "EOF")) {
					t.Fatalf("want a reset, got %v", err)
				}
			}},
		{"malformed JSON", bankingcircle.Fault{Kind: bankingcircle.FaultMalformed},
			func(t *testing.T, resp *answer, body []byte, err error) {
				var v any
				if err != nil || resp.StatusCode != 200 || json.Unmarshal(body, &v) == nil {
					t.Fatalf("want a 200 with broken JSON, got %v %q %v", resp, body, err)
				}
			}},
		{"short expires_in", bankingcircle.Fault{Kind: bankingcircle.FaultShortExpiry, Expiry: 2 * time.Second},
			func(t *testing.T, resp *answer, body []byte, err error) {
				var tr bankingcircle.TokenResponse
				if err != nil || resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil || tr.ExpiresIn != "2" {
					t.Fatalf("got %v %q %v", resp, body, err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, nil)
			f.emu.SetTokenFault(tc.fault)
			resp, body, err := raw(t, f.client, f.emu.AuthURL()+bankingcircle.AuthorizePath, basic(user, pass), 300*time.Millisecond)
			tc.check(t, resp, body, err)
			if got := f.emu.TokenArrivalsLastMinute(); got != 1 {
				t.Fatalf("arrivals in the last minute = %d, want 1", got)
			}
			f.emu.SetTokenFault(bankingcircle.Fault{})
			if r := f.authorize(t); r.status != 200 {
				t.Fatalf("after clearing the fault: %d %s", r.status, r.body)
			}
		})
	}
}

func TestShortExpiryTokenExpires(t *testing.T) {
	f := start(t, nil)
	f.emu.SetTokenFault(bankingcircle.Fault{Kind: bankingcircle.FaultShortExpiry, Expiry: time.Second})
	tok := f.token(t)
	if r := f.accounts(t, "", tok); r.status != 200 {
		t.Fatalf("fresh token: %d", r.status)
	}
	f.clock.Advance(time.Second)
	if r := f.accounts(t, "", tok); r.status != 401 {
		t.Fatalf("token after its short lifetime: %d, want 401", r.status)
	}
}

func TestAPIFaults(t *testing.T) {
	f := start(t, nil)
	tok := f.token(t)
	url := f.emu.APIURL() + bankingcircle.AccountsPath

	f.emu.SetAPIFault(bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 503, Every: 2})
	var statuses []int
	for range 4 {
		resp, _, err := raw(t, f.client, url, "Bearer "+tok, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		statuses = append(statuses, resp.StatusCode)
	}
	if want := []int{503, 200, 503, 200}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v (one request in two)", statuses, want)
	}

	f.emu.SetAPIFault(bankingcircle.Fault{Kind: bankingcircle.FaultMalformed})
	if _, _, err := raw(t, f.client, url, "Bearer "+tok, 5*time.Second); err == nil {
		t.Fatal("a body cut short read without error")
	}
	f.emu.SetAPIFault(bankingcircle.Fault{Kind: bankingcircle.FaultReset})
	if _, _, err := raw(t, f.client, url, "Bearer "+tok, 5*time.Second); err == nil {
		t.Fatal("a reset connection answered")
	}

	// Connection: close ends a kept-alive connection after the answer.
	f.emu.SetAPIFault(bankingcircle.Fault{Kind: bankingcircle.FaultCloseConn})
	keep := &http.Client{Transport: &http.Transport{TLSClientConfig: f.client.Transport.(*http.Transport).TLSClientConfig}}
	resp, _, err := raw(t, keep, url, "Bearer "+tok, 5*time.Second)
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("close-conn: %v %v", resp, err)
	}

	got := f.emu.Received()
	if len(got) != 7 || got[0].Method != http.MethodGet || got[0].RequestURI != bankingcircle.AccountsPath {
		t.Fatalf("received %d requests: %+v", len(got), got)
	}
	if a := got[0].Header.Get("Authorization"); a != "Bearer [redacted]" {
		t.Fatalf("recorded Authorization %q keeps the token", a)
	}
}

func TestTokenArrivalsWindow(t *testing.T) {
	f := start(t, nil)
	for range 3 {
		f.authorize(t)
		f.clock.Advance(25 * time.Second)
	}
	// Arrivals at 0, 25 and 50 s; now is 75 s.
	if got := f.emu.TokenArrivalsLastMinute(); got != 2 {
		t.Fatalf("arrivals in the last minute = %d, want 2", got)
	}
	if got := f.emu.MaxTokenArrivalsPerMinute(); got != 3 {
		t.Fatalf("max per rolling minute = %d, want 3", got)
	}
}
