package oauth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/testkit/pgtest"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

var errCrash = errors.New("simulated crash")

// TestCrashMatrix aborts a refresh after each step, re-opens the store from
// disk as a restarted process would (a new source instance, the clock past
// the intent lease) and fetches again. The outcomes are the table in
// docs/oauth.md.
func TestCrashMatrix(t *testing.T) {
	type outcome string
	const (
		ok       outcome = "token from the stored refresh token"
		reused   outcome = "the stored access token, no refresh"
		consentQ outcome = "consent_required (interrupted refresh)"
	)
	type matrixRow struct {
		rotate bool
		step   Step
		want   outcome
	}
	rows := []matrixRow{
		{false, StepIntentRecorded, ok},
		{false, StepBankAnswered, ok},
		{false, StepAnswerStored, reused},
		{true, StepIntentRecorded, ok},
		{true, StepBankAnswered, consentQ},
		{true, StepAnswerStored, reused},
	}
	for _, kind := range []string{"bolt", "vault", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var vault *vaulttest.Server
			var pg *pgtest.Server
			switch kind {
			case "vault":
				vault = vaulttest.Start(t)
			case "postgres":
				pg = pgtest.Start(t)
			}
			for _, tc := range rows {
				name := fmt.Sprintf("%s/crash after %s", map[bool]string{false: "BPCE", true: "rotating"}[tc.rotate], tc.step)
				t.Run(name, func(t *testing.T) {
					open := storeOpener(t, vault, pg)
					e := newEnv(t, tc.rotate)
					store := open()
					crashAt := tc.step
					a := e.authCode(t, store, nil, &Hooks{After: func(s Step, _ string) error {
						if s == crashAt {
							return errCrash
						}
						return nil
					}})
					e.consent(t, a, "", "marc")
					e.clk.Add(2 * time.Hour)
					crashed := e.clk.Now() // when the interrupted refresh started
					ctx := context.Background()
					if _, err := a.Fetch(ctx, "marc"); !errors.Is(err, errCrash) {
						t.Fatalf("the crash hook did not abort: %v", err)
					}
					if err := store.Close(); err != nil {
						t.Fatal(err)
					}

					store = open() // restart
					defer store.Close()
					e.clk.Add(time.Minute) // past the 30 s intent lease
					b := e.authCode(t, store, nil, nil)
					refreshes := e.h.Refreshes()
					tok, err := b.Fetch(ctx, "marc")
					got := ok
					if err == nil && e.h.Refreshes() == refreshes {
						got = reused
					}
					if err != nil {
						cr := asConsentRequired(t, err)
						if !strings.Contains(cr.Cause, "interrupted refresh") {
							t.Fatalf("cause %q does not say the refresh was interrupted", cr.Cause)
						}
						// The cause names the interrupted refresh, not the one
						// the restarted process started a minute later.
						if at := crashed.UTC().Format(time.RFC3339); !strings.Contains(cr.Cause, "refresh started at "+at) {
							t.Fatalf("cause %q does not name the interrupted refresh, started at %s", cr.Cause, at)
						}
						got = consentQ
						e.noSecrets(t, "the error", err.Error())
					} else if _, valid := e.h.CustomerOf(tok.Header); !valid {
						t.Fatal("the token after restart is not valid at the bank")
					}
					if got != tc.want {
						t.Fatalf("after restart: %s (err %v), want %s", got, err, tc.want)
					}
					c, err := store.Get(ctx, consentstore.Key{Route: "bpce", Subject: "marc"})
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("outcome: %s; stored state %s, generation %d", got, c.State, c.Generation)
				})
			}
		})
	}
}

// storeOpener returns a function that opens the same store again, as a
// restarted process would: the bbolt file from disk, or a new client on the
// same Vault KV mount of srv, or a new pool on a database of pg (both nil: bbolt).
func storeOpener(t *testing.T, srv *vaulttest.Server, pg *pgtest.Server) func() consentstore.Store {
	if pg != nil {
		cfg := consentstore.PostgresConfig{Host: pg.Host(), Port: pg.Port(), Database: pg.NewDatabase(t),
			User: pgtest.User, Password: pg.Password(), TLSMode: "disable", MaxConns: 4}
		return func() consentstore.Store {
			s, err := consentstore.OpenPostgres(context.Background(), cfg, testRing(t), true)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	if srv != nil {
		mount := vaulttest.Unique("consents")
		srv.Mount(mount, "kv-v2")
		return func() consentstore.Store { return consentstore.NewVault(vaultClient(t, srv), mount, "tokenproxy") }
	}
	path := t.TempDir() + "/consents.db"
	return func() consentstore.Store { return openBolt(t, path) }
}

func TestCensus(t *testing.T) {
	e := newEnv(t, false)
	store, _ := tempBolt(t)
	a := e.authCode(t, store, nil, nil)
	e.consent(t, a, "app-a", "marc")
	e.consent(t, a, "app-b", "lea")
	e.clk.Add(85 * 24 * time.Hour)
	e.consent(t, a, "app-b", "paul")
	ctx := context.Background()
	c, err := TakeCensus(ctx, store, e.clk.Now(), 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.ByState["bpce"][consentstore.Active] != 3 || c.ExpiringSoon["bpce"] != 2 {
		t.Fatalf("census %+v, want 3 active and 2 expiring within 7 days", c)
	}
}
