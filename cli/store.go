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
	"go.uber.org/zap/zapcore"

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
	st, err := probeStore(ctx, cfg, vc, log, timeout)
	if err != nil {
		var fe *problem.FieldError
		if errors.As(err, &fe) {
			line("FAIL", fe.Path+": "+fe.Err.Error(), fe.Fix)
		} else {
			line("FAIL", err.Error(), "")
		}
		return nil, true
	}
	line("ok", fmt.Sprintf("%s reachable, encryption key matches", strings.Join(cfg.Store.Redis.Addresses, ", ")), "")
	return st, false
}

// validateStoreTimeout bounds validate's check of the shared store.
const validateStoreTimeout = 10 * time.Second

// probeStore opens the shared store for validate and check and checks it
// within timeout: Redis answers and the encryption key opens its key check
// value (nil for the memory store). The command reports the result itself,
// so the store's own lines about serving while Redis is away are left out
// (errors only) and go-redis's messages go to the log at debug level, never
// raw to stderr between the command's lines.
func probeStore(ctx context.Context, cfg *config.Config, vc *vaultsrc.Client, log *zap.Logger, timeout time.Duration) (*route.Store, error) {
	if cfg.Store.Kind != config.StoreRedis {
		return nil, nil
	}
	redisstore.UseLogger(log)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	quiet := log.WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
	st, err := route.OpenStore(cctx, cfg.Store, route.StoreOptions{Log: quiet, Vault: vaultReader(vc)})
	if err == nil {
		err = st.Check(cctx)
	}
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	return st, nil
}

// validateStore is probeStore for `tokenproxy validate`: a store it cannot
// reach or open is a configuration error naming the field and the fix.
func validateStore(ctx context.Context, cfg *config.Config, vc *vaultsrc.Client, log *zap.Logger) (*route.Store, error) {
	st, err := probeStore(ctx, cfg, vc, log, validateStoreTimeout)
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: fmt.Errorf("the shared store is not usable:\n%w\n"+
			"(validate connects to Redis and opens its key check value; --skip-credentials checks the configuration only)", err)}
	}
	return st, nil
}

// vaultReader is vc as a secret.VaultReader, nil (not a typed nil) without Vault.
func vaultReader(vc *vaultsrc.Client) secret.VaultReader {
	if vc == nil {
		return nil
	}
	return vc
}
