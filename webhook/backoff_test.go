package webhook_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/webhook"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRetrySchedule: in a synctest bubble (virtual time), a receiver that
// answers 503 five times is retried after 1 s, 2 s, 4 s, then 8 s (the
// cap), with the jitter at its top; the sixth attempt is delivered and
// nothing is sent afterwards. The receiver is an in-memory transport here:
// real sockets do not run on the bubble's clock (TestDeliveryThroughOutage
// has the real receiver).
func TestRetrySchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := stores(t, "bolt", 1)[0]
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		client := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Since(start))
			code := http.StatusServiceUnavailable
			if len(at) == 6 {
				code = http.StatusNoContent
			}
			return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		})}
		produce(t, consentstore.OutboxOf(s), 0, 1)
		d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(s), Hooks: []webhook.Hook{hook("https://app.example/hooks")},
			Client: client, Poll: 100 * time.Millisecond, Backoff: time.Second, MaxBackoff: 8 * time.Second, Rand: func() float64 { return 1 }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); d.Run(ctx) }()
		time.Sleep(time.Minute)
		cancel()
		<-done
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second, 23 * time.Second}
		mu.Lock()
		defer mu.Unlock()
		if len(at) != len(want) {
			t.Fatalf("attempts at %v, want %v", at, want)
		}
		for i := range want {
			if at[i] != want[i] {
				t.Fatalf("attempts at %v, want %v", at, want)
			}
		}
	})
}
