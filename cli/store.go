package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/problem"
	"github.com/tokenproxy/tokenproxy/redisstore"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/secret"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// openStore opens the shared token store of cfg (nil for the memory store),
// exporting tokenproxy_dependency_up{dependency="redis"} and the store's
// metrics when m is not nil. A store that cannot be used (bad key, refused
// credentials) is a configuration error; an unreachable Redis is not: the
// store starts degraded and reconnects.
func openStore(ctx context.Context, cfg *config.Config, vc *vaultsrc.Client, log *zap.Logger, m *metrics.Metrics) (*route.Store, error) {
	if cfg.Store.Kind != config.StoreRedis {
		return nil, nil
	}
	redisstore.UseLogger(log) // go-redis's own messages as JSON debug lines, not raw stderr
	so := route.StoreOptions{Log: log, Vault: vaultReader(vc)}
	if m != nil {
		up := new(atomic.Bool)
		m.WatchDependency("redis", up.Load)
		so.OnDependency = up.Store
		so.Observer = metrics.NewStore(m)
	}
	st, err := route.OpenStore(ctx, cfg.Store, so)
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: fmt.Errorf("store is not usable:\n%w", err)}
	}
	if err := st.Healthy(); err != nil {
		log.Warn("starting without the shared store; cached tokens and the local budget serve until Redis is back", zap.Error(err))
	}
	return st, nil
}

// withStore adds the store's health to what /readyz reports as degraded.
func withStore(degraded func() error, st *route.Store) func() error {
	if st == nil {
		return degraded
	}
	return func() error {
		var errs []error
		if degraded != nil {
			errs = append(errs, degraded())
		}
		return errors.Join(append(errs, st.Healthy())...)
	}
}

// checkStore opens the store for `tokenproxy check` and prints one line in
// the report's format; the store is returned so that the token steps pace
// through the shared budget. failed reports a failed step.
func checkStore(ctx context.Context, cfg *config.Config, vc *vaultsrc.Client, log *zap.Logger, w io.Writer, timeout time.Duration) (st *route.Store, failed bool) {
	if cfg.Store.Kind != config.StoreRedis {
		return nil, false
	}
	line := func(verdict, detail, fix string) {
		s := fmt.Sprintf("[%-4s] %-14s %-28s %s", verdict, "-", "redis store", detail)
		if fix != "" {
			s += "\n       " + strings.Repeat(" ", 14) + " fix: " + fix
		}
		fmt.Fprintln(w, s)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := route.OpenStore(cctx, cfg.Store, route.StoreOptions{Log: log, Vault: vaultReader(vc)})
	if err == nil {
		err = st.Check(cctx)
	}
	if err != nil {
		var fe *problem.FieldError
		if errors.As(err, &fe) {
			line("FAIL", fe.Path+": "+fe.Err.Error(), fe.Fix)
		} else {
			line("FAIL", err.Error(), "")
		}
		_ = st.Close()
		return nil, true
	}
	line("ok", fmt.Sprintf("%s reachable, encryption key matches", strings.Join(cfg.Store.Redis.Addresses, ", ")), "")
	return st, false
}

// vaultReader is vc as a secret.VaultReader, nil (not a typed nil) without Vault.
func vaultReader(vc *vaultsrc.Client) secret.VaultReader {
	if vc == nil {
		return nil
	}
	return vc
}
