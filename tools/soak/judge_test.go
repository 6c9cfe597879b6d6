package main

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
)

func TestJudgeRedisOutage(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tl := &timeline{}
	tl.add(event{at: t0, phase: phase{name: "calm"}})
	j := &judge{tl: tl, groups: []string{groupSidecar, groupGateway},
		outages: []outage{{from: at(30), to: at(40)}},
		// issued at 26 (held by every replica before the outage), expiring
		// at 33 and handed out until 31.25 (a 7 s token's capped skew is
		// 1.75 s); one issued at 29, too late to have reached them all.
		clusterTokens: []tokenLife{{iat: at(26), exp: at(33)}, {iat: at(29), exp: at(34)}}}
	throttled := func(proc int, start, end float64) result {
		return result{proc: proc, start: at(start), end: at(end), status: http.StatusServiceUnavailable, code: "token_throttled"}
	}
	tests := []struct {
		name  string
		r     result
		class string
		why   string
	}{
		{"served", result{proc: 1, start: at(33), end: at(33.1), status: http.StatusOK}, classServed, ""},
		{"valid token held, Redis down", throttled(1, 30.2, 35.2), classDefect, "valid token existed"},
		{"held token within its skew, Redis down", throttled(1, 30.9, 35), classCouldNot, "Redis outage"},
		{"held token expired, Redis down", throttled(1, 33, 36), classCouldNot, "Redis outage"},
		{"after Redis's return, within the grace", throttled(1, 43, 44), classCouldNot, "Redis outage"},
		{"long after Redis's return, calm", throttled(1, 50, 51), classDefect, "token endpoint healthy"},
		{"the sidecar does not use Redis", throttled(0, 35, 36), classDefect, "token endpoint healthy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, why := j.classify(tt.r)
			if class != tt.class || !strings.Contains(why, tt.why) {
				t.Fatalf("classify = %q, %q; want %q, containing %q", class, why, tt.class, tt.why)
			}
		})
	}
}

func TestRedisStops(t *testing.T) {
	if got := redisStops(3 * time.Minute); len(got) != 1 {
		t.Errorf("3m: %v; want one stop", got)
	}
	if got := redisStops(5 * time.Minute); len(got) != 2 || got[0] != 2*time.Minute || got[1] != 225*time.Second {
		t.Errorf("5m: %v; want stops at 2m and 3m45s", got)
	}
}

func TestBudgetsNeverExceedTheBank(t *testing.T) {
	for _, tt := range []struct{ budget, replicas, side, gw int }{
		{60, 3, 30, 30}, {61, 3, 30, 31}, {30, 1, 30, 0},
	} {
		s, g := budgets(options{budget: tt.budget, replicas: tt.replicas})
		if s != tt.side || g != tt.gw || s+g > tt.budget {
			t.Errorf("budgets(%d, %d replicas) = %d, %d; want %d, %d", tt.budget, tt.replicas, s, g, tt.side, tt.gw)
		}
	}
}

func TestTokenLivesAndArrivals(t *testing.T) {
	enc := base64.RawURLEncoding
	tok := enc.EncodeToString([]byte(`{"typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(`{"iat":1800000000,"exp":1800000005,"thumbprint":"AB12"}`)) + ".c2ln"
	lives := tokenLives([]string{tok, "not-a-token", "a.%%%.b"})
	if len(lives) != 1 || lives[0].thumbprint != "AB12" || lives[0].exp.Sub(lives[0].iat) != 5*time.Second {
		t.Fatalf("tokenLives = %+v", lives)
	}
	t0 := time.Unix(1800000000, 0)
	var arr []bankingcircle.TokenArrival
	for i := range 5 {
		arr = append(arr, bankingcircle.TokenArrival{Time: t0.Add(time.Duration(i) * 20 * time.Second), Fingerprint: "a"},
			bankingcircle.TokenArrival{Time: t0.Add(time.Duration(i) * time.Second), Fingerprint: "b"})
	}
	if got := maxArrivalsPerMinute(arr, map[string]bool{"a": true}); got != 3 {
		t.Errorf("group a: %d in a rolling minute; want 3 (0, 20, 40 s)", got)
	}
	if got := maxArrivalsPerMinute(arr, map[string]bool{"a": true, "b": true}); got != 8 {
		t.Errorf("both groups: %d; want 8", got)
	}
}

// A token failure while the restarted Vault did not yet hold the password
// is put down to the restart; the same failure later is a defect.
func TestClassifyVaultRestartedEmpty(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tl := &timeline{}
	tl.add(event{at: t0, phase: phase{name: "calm"}})
	tl.vaultEmpty(at(10), at(10.05))
	r := func(s float64) result {
		return result{start: at(s), end: at(s + 0.2), status: http.StatusServiceUnavailable, code: "token_unavailable"}
	}
	if class, why := classify(r(10), tl, time.Time{}); class != classCouldNot || !strings.Contains(why, "restarted Vault") {
		t.Fatalf("inside the span: %q %q", class, why)
	}
	if class, _ := classify(r(20), tl, time.Time{}); class != classDefect {
		t.Fatalf("long after the span: %q; want a defect", class)
	}
}
