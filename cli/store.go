package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/problem"
)

// checkStore opens the Assembly's shared store for `tokenproxy check` (a
// is set up with Probe: Redis must answer and the key must match within
// the check's timeout) and prints one line in the report's format; the
// store stays open in a, so that the token steps pace through the shared
// budget. failed reports a failed step (the store is then left out).
func checkStore(ctx context.Context, a *assemble.Assembly, w io.Writer) (failed bool) {
	cfg := a.Config
	if cfg.Store.Kind != config.StoreRedis {
		return false
	}
	if err := a.OpenStore(ctx); err != nil {
		failLine(w, "redis store", err)
		return true
	}
	checkLine(w, "ok", "redis store", fmt.Sprintf("%s reachable, encryption key matches", strings.Join(cfg.Store.Redis.Addresses, ", ")), "")
	return false
}

// checkLine prints one line of `tokenproxy check` about a store, in the
// report's format (diagnose.Report), with the fix below when there is one.
func checkLine(w io.Writer, verdict, name, detail, fix string) {
	s := fmt.Sprintf("[%-4s] %-14s %-28s %s", verdict, "-", name, detail)
	if fix != "" {
		s += "\n       " + strings.Repeat(" ", 14) + " fix: " + fix
	}
	fmt.Fprintln(w, s)
}

// failLine prints a failed store's line: the field to fix, what is wrong
// and the fix.
func failLine(w io.Writer, name string, err error) {
	var fe *problem.FieldError
	if errors.As(err, &fe) {
		checkLine(w, "FAIL", name, fe.Path+": "+fe.Err.Error(), fe.Fix)
	} else {
		checkLine(w, "FAIL", name, err.Error(), "")
	}
}

// checkConsents checks the Postgres consent store for `tokenproxy check`
// (assemble.CheckPostgresConsents) and prints one line; nothing for the
// other stores. failed reports a failed step. The store is closed again:
// the token steps use a probe store (a running tokenproxy holds the real
// one).
func checkConsents(ctx context.Context, a *assemble.Assembly, w io.Writer) (failed bool) {
	detail, ok, err := assemble.CheckPostgresConsents(ctx, a.Config, a.Options())
	switch {
	case !ok:
		return false
	case err != nil:
		failLine(w, "postgres consent store", err)
		return true
	}
	checkLine(w, "ok", "postgres consent store", detail, "")
	return false
}
