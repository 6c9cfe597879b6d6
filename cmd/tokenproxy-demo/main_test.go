package main

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/cli"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// --serve keeps the proxy up for a stock client until it is stopped.
func TestServe(t *testing.T) {
	if testing.Short() {
		t.Skip("demo takes a few seconds")
	}
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--serve", "-v"}, &out, &errOut) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "Serving until Ctrl-C") {
		select {
		case code := <-done:
			t.Fatalf("--serve stopped with exit %d:\n%s%s", code, out.String(), errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not start serving:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := regexp.MustCompile(`http_proxy=(http://127\.0\.0\.1:\d+) curl`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no proxy address in:\n%s", out.String())
	}
	pu, _ := url.Parse(m[1])
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://sandbox.bankingcircleconnect.com/api/v1/accounts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	cancel()
	if code := <-done; code != cli.ExitOK {
		t.Fatalf("exit %d\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "token fetched") {
		t.Fatalf("-v printed no log line:\n%s", errOut.String())
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"--no-such-flag"}, {"extra"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != cli.ExitUsage {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, cli.ExitUsage, errOut.String())
		}
	}
}
