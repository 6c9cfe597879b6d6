package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/demo"
	"github.com/tokenproxy/tokenproxy/testkit/testlog"
)

func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("demo takes a few seconds")
	}
	log, _ := testlog.New(t)
	var out bytes.Buffer
	if err := demo.Run(context.Background(), &out, demo.Options{Log: log}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, w := range []string{"20 x 200   token requests sent: 1", "10 x 200   token requests sent: 0   cache hits: 10", "has expired", "403", "accepted by the bank's signature check: 1, rejected: 0", "Summary: 41 requests served, 3 tokens fetched",
		"status=active&subject=alice", "signature and token accepted: 1, rejected: 0", "refreshes at the bank: 1",
		"consent-done?route=fapibank&status=active&subject=alice", "request_uri=urn:ietf:params:oauth:request_uri:",
		"accepted with a DPoP proof: 1, refused: 0", "the bank saw 1 PAR request", "nonce challenges: AS 1, RS 1",
		"in what the app received: 0", "go run ./cmd/tokenproxy-demo --serve"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("demo report lacks %q:\n%s", w, out.String())
		}
	}
}
