package redisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/redistest"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// Forget removes the subject's shared token (no replica reads it back),
// tells every replica (each one's registered Forget is called with the
// subject) and fences out a fetch that was in flight: its token is neither
// stored nor used (ErrWithdrawn).
func TestForgetWithdrawsEverywhere(t *testing.T) {
	srv := redistest.Start(t)
	src := newBank(time.Hour, 0)
	a := newReplica(t, srv, src, replicaOpts{})
	b := newReplica(t, srv, src, replicaOpts{})
	ra := a.shared.Route("r", time.Second).(*routeStore)
	rb := b.shared.Route("r", time.Second).(*routeStore)
	var mu sync.Mutex
	told := map[string][]string{}
	for name, r := range map[string]*routeStore{"a": ra, "b": rb} {
		r.OnForget(func(subject string) { mu.Lock(); told[name] = append(told[name], subject); mu.Unlock() })
	}
	anyTok := func(*tokencache.Token) bool { return true }
	mk := func(v string) *tokencache.Token {
		return &tokencache.Token{Value: v, Header: "Bearer " + v, Expiry: time.Now().Add(time.Hour)}
	}
	ctx := context.Background()
	if _, _, err := ra.Refresh(ctx, "owner/alice", 0, anyTok, func(context.Context) (*tokencache.Token, error) { return mk("old"), nil }); err != nil {
		t.Fatal(err)
	}
	// A refresh in flight on b when alice's consent is deleted through a.
	started, proceed := make(chan struct{}), make(chan struct{})
	var got *tokencache.Token
	var gotErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		got, _, gotErr = rb.Refresh(ctx, "owner/alice", 1, func(*tokencache.Token) bool { return false }, func(context.Context) (*tokencache.Token, error) {
			close(started)
			<-proceed
			return mk("in-flight"), nil
		})
	})
	<-started
	if err := ra.Forget(ctx, "owner/alice"); err != nil {
		t.Fatal(err)
	}
	close(proceed)
	wg.Wait()
	if !errors.Is(gotErr, tokencache.ErrWithdrawn) || got != nil {
		t.Fatalf("the fetch in flight during Forget got %v, %v; want ErrWithdrawn", got, gotErr)
	}
	if tok, _, err := rb.load(ctx, "owner/alice", rb.keys("owner/alice")); err != nil || tok != nil {
		t.Fatalf("after Forget the store holds %v (%v)", tok, err)
	}
	eventually(t, 5*time.Second, "both replicas are told", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(told["a"]) == 1 && len(told["b"]) == 1 && told["a"][0] == "owner/alice" && told["b"][0] == "owner/alice"
	})
	// A new consent's token is stored again: the tombstone fences only
	// fetches from before it.
	tok, _, err := rb.Refresh(ctx, "owner/alice", 0, anyTok, func(context.Context) (*tokencache.Token, error) { return mk("new"), nil })
	if err != nil || tok.Value != "new" {
		t.Fatalf("after the withdrawal, a new token: %v %v", tok, err)
	}
	if stored, _, _ := ra.load(ctx, "owner/alice", ra.keys("owner/alice")); stored == nil || stored.Value != "new" {
		t.Fatalf("the new token is not stored: %v", stored)
	}
}

// TestOnForgetStop: a cache no longer served (a route a reload replaced)
// stops receiving forget messages, and its registration is released, so
// reloads do not pile registrations up.
func TestOnForgetStop(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, newBank(time.Hour, 0), replicaOpts{})
	r := a.shared.Route("r", time.Second).(*routeStore)
	var mu sync.Mutex
	told := map[string][]string{}
	register := func(name string) func() {
		return r.OnForget(func(subject string) { mu.Lock(); told[name] = append(told[name], subject); mu.Unlock() })
	}
	stopOld := register("old")
	stopNew := register("new")
	stopOld()
	if err := r.Forget(context.Background(), "owner/alice"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := fmt.Sprint(told)
	mu.Unlock()
	if got != "map[new:[owner/alice]]" {
		t.Fatalf("told %s, want only the registration still served", got)
	}
	if n := a.shared.forgetters("r"); n != 1 {
		t.Fatalf("%d registrations after one stopped, want 1", n)
	}
	stopNew()
	if n := a.shared.forgetters("r"); n != 0 {
		t.Fatalf("%d registrations after both stopped, want 0", n)
	}
}
