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
	line := func(verdict, detail, fix string) {
		s := fmt.Sprintf("[%-4s] %-14s %-28s %s", verdict, "-", "redis store", detail)
		if fix != "" {
			s += "\n       " + strings.Repeat(" ", 14) + " fix: " + fix
		}
		fmt.Fprintln(w, s)
	}
	if err := a.OpenStore(ctx); err != nil {
		var fe *problem.FieldError
		if errors.As(err, &fe) {
			line("FAIL", fe.Path+": "+fe.Err.Error(), fe.Fix)
		} else {
			line("FAIL", err.Error(), "")
		}
		return true
	}
	line("ok", fmt.Sprintf("%s reachable, encryption key matches", strings.Join(cfg.Store.Redis.Addresses, ", ")), "")
	return false
}
