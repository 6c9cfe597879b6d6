package redisstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/tokencache"
)

// forgetPrefix starts a forget message on the notification channel; the
// rest is the route and subject, sealed (Redis never sees a subject).
const forgetPrefix = "forget "

var forgetAAD = []byte("tokenproxy forget")

// Forget implements tokencache.Forgetter: it replaces subject's shared
// token with a tombstone that fences out any fetch in flight (its token is
// refused and not used) and publishes a forget message, on which every
// replica's cache for the route drops the subject's token.
func (r *routeStore) Forget(ctx context.Context, subject string) error {
	k := r.keys(subject)
	if err := r.forget(ctx, subject, k); err != nil {
		return fmt.Errorf("redis store: withdrawing a token of route %q: %w", r.route, err)
	}
	return nil
}

func (r *routeStore) forget(ctx context.Context, subject string, k credKeys) error {
	nonce := uniqueID()
	sealed, err := r.s.seal.seal([]byte(nonce+"\x00"+r.route+"\x00"+subject), forgetAAD)
	if err != nil {
		return err
	}
	msg := forgetPrefix + base64.StdEncoding.EncodeToString(sealed)
	acks := make(chan struct{}, 64)
	r.s.mu.Lock()
	r.s.acks[nonce] = acks
	r.s.mu.Unlock()
	defer func() {
		r.s.mu.Lock()
		delete(r.s.acks, nonce)
		r.s.mu.Unlock()
	}()
	n, err := forgetScript.Run(ctx, r.s.rdb, []string{k.tok, k.gen},
		r.lockTTL.Milliseconds(), genTTL.Milliseconds(), r.s.notify, msg).Int()
	if err != nil {
		if ctx.Err() == nil {
			r.s.down(err)
		}
		return err
	}
	r.s.ok()
	// Every replica that got the message (this one included) acknowledges
	// it once its cache dropped the token: wait for them all, briefly.
	t := time.NewTimer(forgetAckWait)
	defer t.Stop()
	for range n {
		select {
		case <-acks:
		case <-t.C:
			r.s.log.Warn("not every replica acknowledged a withdrawn token in time; they drop it at their next confirmation",
				zap.String("route", r.route))
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// forgetAckWait bounds how long Forget waits for the replicas' acknowledgements.
const forgetAckWait = time.Second

// ackPrefix starts a replica's acknowledgement of a forget message; the rest
// is the message's nonce.
const ackPrefix = "forgot "

// acked hands an acknowledgement to the Forget waiting for it, if any.
func (s *Shared) acked(payload string) {
	s.mu.Lock()
	ch := s.acks[strings.TrimPrefix(payload, ackPrefix)]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// forgetFn is one registered Forget; its address identifies it for stop.
type forgetFn struct{ fn func(subject string) }

// OnForget implements tokencache.Forgetter.
func (r *routeStore) OnForget(fn func(subject string)) (stop func()) {
	f := &forgetFn{fn: fn}
	r.s.mu.Lock()
	if r.s.forgets[r.route] == nil {
		r.s.forgets[r.route] = map[*forgetFn]struct{}{}
	}
	r.s.forgets[r.route][f] = struct{}{}
	r.s.mu.Unlock()
	return func() {
		r.s.mu.Lock()
		delete(r.s.forgets[r.route], f)
		if len(r.s.forgets[r.route]) == 0 {
			delete(r.s.forgets, r.route)
		}
		r.s.mu.Unlock()
	}
}

// forgetters counts the Forget functions registered for route.
func (s *Shared) forgetters(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.forgets[route])
}

// forgotten handles a forget message: the route's caches drop the subject,
// whoever waits for its token looks again, and the sender is told.
func (s *Shared) forgotten(payload string) {
	blob, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(payload, forgetPrefix))
	if err == nil {
		blob, err = s.seal.open(blob, forgetAAD)
	}
	parts := strings.SplitN(string(blob), "\x00", 3)
	if err != nil || len(parts) != 3 {
		s.log.Warn("ignoring a forget message that does not open with this process's key")
		return
	}
	nonce, route, subject := parts[0], parts[1], parts[2]
	s.mu.Lock()
	fns := make([]func(string), 0, len(s.forgets[route]))
	for f := range s.forgets[route] {
		fns = append(fns, f.fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(subject)
	}
	s.wake(credentialID(route, subject))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), forgetAckWait)
		defer cancel()
		if err := s.rdb.Publish(ctx, s.notify, ackPrefix+nonce).Err(); err != nil {
			s.log.Debug("acknowledging a forget message failed", zap.Error(err))
		}
	}()
}

// withdrawn reports whether the credential's stored record is a tombstone
// (Forget), reading it again.
func (r *routeStore) withdrawn(ctx context.Context, k credKeys) bool {
	vals, err := r.s.rdb.HMGet(ctx, k.tok, "gen", "val").Result()
	if err != nil {
		return false
	}
	gs, _ := vals[0].(string)
	blob, _ := vals[1].(string)
	return gs != "" && blob == ""
}

// consentGone reports whether err says the subject has no usable grant.
func consentGone(err error) bool {
	var ce *tokencache.ConsentRequiredError
	return errors.As(err, &ce)
}

var _ tokencache.Forgetter = (*routeStore)(nil)

// logForget is the line of a withdrawal made by this process's fetch.
func (r *routeStore) logForget(err error) {
	if err != nil {
		r.s.log.Warn("withdrawing a token whose grant is gone failed; replicas drop it at their next confirmation",
			zap.String("route", r.route), zap.Error(err))
	}
}
