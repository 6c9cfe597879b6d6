package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/reload"
)

// reloading says how `run` reloads its configuration: on SIGHUP, on POST
// /-/reload (assemble), and when watch is set or reload.watch is true, when
// the file changes.
type reloading struct {
	path  string
	watch bool
	load  func() (*config.Config, error)
}

func (rl *reloading) loader() func() (*config.Config, error) {
	if rl == nil {
		return nil
	}
	return rl.load
}

// start reloads a on SIGHUP and, when asked, when the file changes, until
// ctx ends or the returned func is called (which waits for both to stop).
func (rl *reloading) start(ctx context.Context, a *assemble.Assembly, cfg *config.Config, log *zap.Logger) (stop func()) {
	if rl == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	wg.Go(func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				a.Reload(ctx, reload.TriggerSignal)
			}
		}
	})
	if rl.watch || cfg.Reload.Watch {
		wg.Go(func() {
			err := reload.Watch(ctx, rl.path, cfg.Reload.Debounce, log.Named("reload"), func() { a.Reload(ctx, reload.TriggerWatch) })
			if err != nil {
				log.Error("the configuration file is not watched; reload with SIGHUP or tokenproxy reload", zap.Error(err))
			}
		})
		log.Info("watching the configuration file", zap.String("path", rl.path))
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// ReloadTokenEnv is the environment variable `tokenproxy reload` reads the
// reload credential from when no --token-file is given.
const ReloadTokenEnv = "TOKENPROXY_RELOAD_TOKEN" //nolint:gosec // the variable's name, not a credential

func (e *env) reloadCommand() *cobra.Command {
	var path, admin, tokenFile string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reload [--config FILE] [--admin HOST:PORT] [--token-file FILE]",
		Short: "Ask the running tokenproxy to reload its configuration, and print the outcome",
		Long: `reload asks a running tokenproxy, over its admin listener (POST /-/reload), to
read its configuration file again and apply it without a restart, as SIGHUP
does; it prints what was kept, rebuilt, added and removed, or why nothing
changed. The admin address and the reload credential (admin.reload_token)
come from --config, or from --admin and --token-file (or ` + ReloadTokenEnv + `).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg *config.Config
			if path != "" {
				data, err := os.ReadFile(path) //nolint:gosec // the operator names the configuration file
				if err == nil {
					cfg, err = config.Decode(data)
				}
				if err != nil {
					return &ExitError{Code: ExitConfig, Err: fmt.Errorf("%s: %w", path, err)}
				}
				cfg.ApplyDefaults()
			}
			if admin == "" && cfg != nil {
				admin = cfg.Listen.Admin
			}
			if admin == "" || admin == "off" {
				return usageError(errors.New("give --admin HOST:PORT or a --config whose listen.admin is on"))
			}
			token, err := reloadToken(e.context(), tokenFile, cfg)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			return requestReload(e.context(), cmd, dialAddr(admin), token, timeout)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "the running tokenproxy's configuration file (for listen.admin and admin.reload_token)")
	cmd.Flags().StringVar(&admin, "admin", "", "the admin listener's address (default: listen.admin of --config)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "a file holding the reload credential (default: $"+ReloadTokenEnv+", else admin.reload_token of --config)")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the outcome")
	return cmd
}

// reloadToken is the credential to send: --token-file, $TOKENPROXY_RELOAD_TOKEN
// or the configuration's admin.reload_token (env or file); "" for none.
func reloadToken(ctx context.Context, file string, cfg *config.Config) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file) //nolint:gosec // the operator names the file
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return strings.TrimSuffix(string(b), "\n"), nil
	}
	if v := os.Getenv(ReloadTokenEnv); v != "" {
		return v, nil
	}
	if cfg == nil || cfg.Admin.ReloadToken.IsZero() {
		return "", nil
	}
	src, err := cfg.Admin.ReloadToken.Open(nil)
	if err != nil {
		return "", fmt.Errorf("admin.reload_token: %w (give the credential with --token-file or $%s)", err, ReloadTokenEnv)
	}
	v, err := src.Get(ctx)
	if err != nil {
		return "", fmt.Errorf("admin.reload_token: %w", err)
	}
	return v.Reveal(), nil
}

// dialAddr is where to reach a listener bound to addr: loopback for an
// unspecified address (0.0.0.0, ::).
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if ip.Is6() {
			return net.JoinHostPort("::1", port)
		}
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

func requestReload(ctx context.Context, cmd *cobra.Command, addr, token string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+assemble.ReloadPath, http.NoBody)
	if err != nil {
		return usageError(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("asking tokenproxy at %s to reload: %w", addr, err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var res reload.Result
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusUnprocessableEntity {
		if err := json.Unmarshal(body, &res); err == nil && res.Outcome != "" {
			return printReload(cmd, res)
		}
	}
	var e struct{ Error, Message string }
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("tokenproxy at %s refused the reload (%d %s): %s", addr, resp.StatusCode, e.Error, e.Message)}
	}
	return &ExitError{Code: ExitFailure, Err: fmt.Errorf("tokenproxy at %s answered %s: %s", addr, resp.Status, bytes.TrimSpace(body))}
}

func printReload(cmd *cobra.Command, res reload.Result) error {
	w := cmd.OutOrStdout()
	if !res.OK() {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("reload %s: %s", res.Outcome, res.Error)}
	}
	fmt.Fprintln(w, "configuration reloaded")
	for _, l := range []struct {
		what  string
		names []string
	}{{"kept", res.Kept}, {"rebuilt", res.Rebuilt}, {"added", res.Added}, {"removed", res.Removed}} {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", l.what, strings.Join(l.names, ", "))
		}
	}
	return nil
}
