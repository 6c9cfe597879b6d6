// Package cli builds tokenproxy's command tree. NewCommand returns a fresh
// tree with no package-level state, so tests can run commands in-process
// with their own output and logger.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/admin"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/internal/version"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/proxy"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/vaultsrc"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // a runtime failure
	ExitConfig  = 2 // the configuration or its credentials are not usable
	ExitUsage   = 64
)

// ExitError carries the process exit code with the error.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Option adjusts a command tree (tests inject output and a logger).
type Option func(*env)

// WithOutput sets stdout and stderr.
func WithOutput(stdout, stderr io.Writer) Option {
	return func(e *env) { e.stdout, e.stderr = stdout, stderr }
}

// WithLogger makes commands log to l instead of building a logger from the configuration.
func WithLogger(l *zap.Logger) Option { return func(e *env) { e.logger = l } }

// WithContext sets the context commands run under (cancel it to stop `run`).
func WithContext(ctx context.Context) Option { return func(e *env) { e.ctx = ctx } }

type env struct {
	stdout, stderr io.Writer
	logger         *zap.Logger
	ctx            context.Context
	logLevel       string
	logFormat      string
}

// NewCommand returns the root command.
func NewCommand(opts ...Option) *cobra.Command {
	e := &env{stdout: os.Stdout, stderr: os.Stderr}
	for _, o := range opts {
		o(e)
	}
	root := &cobra.Command{
		Use:   "tokenproxy",
		Short: "A credential and token broker for mTLS, bearer-token and signed-request APIs",
		Long: `tokenproxy runs beside an app (or as a cluster's egress gateway) and lets it call
APIs that demand a client certificate, short-lived bearer tokens and signed
requests, with plain HTTP. The app holds no certificate, password, token or key.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.PersistentFlags().StringVar(&e.logLevel, "log-level", "", "log level: debug, info, warn, error (overrides log.level)")
	root.PersistentFlags().StringVar(&e.logFormat, "log-format", "", "log format: json or console (overrides log.format)")
	root.AddCommand(e.runCommand(), e.validateCommand(), e.checkCommand(), e.onboardCommand(), e.versionCommand())
	markUsageErrors(root)
	return root
}

// usageError marks err as a mistake in the command line (exit status ExitUsage).
func usageError(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

// markUsageErrors makes every flag error and argument error of c and its
// subcommands an ExitUsage error.
func markUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError(err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// Execute runs the command tree with args and returns the process exit code,
// printing the error to stderr.
func Execute(args []string, opts ...Option) int {
	cmd := NewCommand(opts...)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if _, _, ferr := cmd.Find(args); err != nil && ferr != nil {
		// The command line names no command (an unknown command).
		err = usageError(ferr)
	}
	if err == nil {
		return ExitOK
	}
	w := cmd.ErrOrStderr()
	fmt.Fprintln(w, "tokenproxy: "+strings.ReplaceAll(err.Error(), "\n", "\n  "))
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitFailure
}

func (e *env) context() context.Context {
	if e.ctx != nil {
		return e.ctx
	}
	return context.Background()
}

func (e *env) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), version.String())
			return nil
		},
	}
}

func (e *env) loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, &ExitError{Code: ExitUsage, Err: errors.New("--config is required")}
	}
	cfg, err := config.LoadFile(path)
	if err == nil {
		if err = route.Check(cfg); err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: fmt.Errorf("configuration is invalid:\n%w", err)}
	}
	if e.logLevel != "" {
		cfg.Log.Level = e.logLevel
	}
	if e.logFormat != "" {
		cfg.Log.Format = e.logFormat
	}
	return cfg, nil
}

func (e *env) buildLogger(cfg config.Log) (*zap.Logger, error) {
	if e.logger != nil {
		return e.logger, nil
	}
	return NewLogger(e.stderr, cfg.Level, cfg.Format)
}

// NewLogger returns a zap logger writing to w at level in format json or console.
func NewLogger(w io.Writer, level, format string) (*zap.Logger, error) {
	core, err := newCore(zapcore.AddSync(w), level, format)
	if err != nil {
		return nil, err
	}
	return zap.New(core), nil
}

func newCore(ws zapcore.WriteSyncer, level, format string) (zapcore.Core, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zapcore.NewCore(enc, ws, lvl), nil
}

func (e *env) validateCommand() *cobra.Command {
	var path string
	var skipCredentials bool
	cmd := &cobra.Command{
		Use:   "validate --config FILE",
		Short: "Check the configuration and load every credential it names, without serving",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := e.loadConfig(path)
			if err != nil {
				return err
			}
			if skipCredentials {
				fmt.Fprintf(cmd.OutOrStdout(), "configuration OK (%d routes; credentials not loaded)\n", len(cfg.Routes))
				return nil
			}
			log, vc, err := e.loggerAndVault(cfg)
			if err != nil {
				return err
			}
			defer closeVault(vc)
			bo := buildOptions(vc)
			consents, err := route.OpenConsentsForCheck(e.context(), cfg, bo)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: fmt.Errorf("the consent store is not usable:\n%w", err)}
			}
			defer consents.Close()
			bo.Consents, bo.Log = consents, log
			if bo.Store, err = validateStore(e.context(), cfg, vc, log); err != nil {
				return err
			}
			defer bo.Store.Close()
			routes, err := route.Build(e.context(), cfg, bo)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
			}
			if err := validateProxyListener(e.context(), cfg, bo); err != nil {
				return &ExitError{Code: ExitConfig, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
			}
			for _, r := range routes {
				line := fmt.Sprintf("route %s: %s -> %s", r.Name, strings.Join(r.Hosts, ", "), r.Upstream)
				if r.ClientCert != nil {
					c := r.ClientCert.Load()
					line += fmt.Sprintf("; client certificate %q valid until %s", c.Leaf.Subject.CommonName, c.Leaf.NotAfter.UTC().Format("2006-01-02"))
				}
				if r.Tokens != nil {
					line += "; token credentials present"
				}
				fmt.Fprintln(cmd.OutOrStdout(), line)
			}
			if consents.Snapshot() {
				fmt.Fprintf(cmd.OutOrStdout(), "consent store %s: held by a running tokenproxy; its key was checked on a read-only copy\n", cfg.Consents.Store.Bbolt.Path)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration OK")
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	cmd.Flags().BoolVar(&skipCredentials, "skip-credentials", false, "check the schema and fields only; do not load certificates or read secrets (for CI on manifests whose secrets exist only in the cluster)")
	return cmd
}

func (e *env) runCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Serve the forward proxy, the routes' local ports and the admin endpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := e.loadConfig(path)
			if err != nil {
				return err
			}
			log, err := e.buildRunLogger(cfg.Log)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signal.NotifyContext(e.context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return Serve(ctx, cfg, log)
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	return cmd
}

// openVault logs in to Vault when the configuration has a vault: block. A
// failed first login is a configuration error (exit 2) naming the method and
// role, never the secret.
func openVault(ctx context.Context, cfg *config.Config, log *zap.Logger) (*vaultsrc.Client, error) {
	if cfg.Vault == nil {
		return nil, nil
	}
	c, err := vaultsrc.New(ctx, route.VaultConfig(*cfg.Vault), vaultsrc.WithLogger(log))
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: fmt.Errorf("vault: %w", err)}
	}
	return c, nil
}

// loggerAndVault builds the command's logger and, when the configuration
// has a vault: block, logs in to Vault (the client is nil otherwise).
func (e *env) loggerAndVault(cfg *config.Config) (*zap.Logger, *vaultsrc.Client, error) {
	log, err := e.buildLogger(cfg.Log)
	if err != nil {
		return nil, nil, &ExitError{Code: ExitConfig, Err: err}
	}
	vc, err := openVault(e.context(), cfg, log)
	if err != nil {
		return nil, nil, err
	}
	return log, vc, nil
}

// closeVault stops a Vault client's background renewal; nil is fine.
func closeVault(vc *vaultsrc.Client) {
	if vc != nil {
		_ = vc.Close()
	}
}

// buildOptions wires the Vault client, when there is one, into route building.
func buildOptions(vc *vaultsrc.Client) route.Options {
	if vc == nil {
		return route.Options{}
	}
	return route.Options{Vault: vc, VaultClient: vc}
}

// ServerOptions are the proxy server's listeners and timings from cfg (the
// demo starts its tokenproxy in process with them).
func ServerOptions(cfg *config.Config, log *zap.Logger) proxy.Options {
	return proxy.Options{Log: log, ProxyAddr: cfg.Listen.Proxy, AdminAddr: cfg.Listen.Admin,
		ShutdownGrace: cfg.ShutdownGrace, ExpiryWarning: cfg.CertificateExpiryWarning, Gateway: cfg.Listen.AllowNonLoopback}
}

// Serve builds the server for cfg and serves until ctx ends, then drains.
func Serve(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	// net/http's transport logs through the standard library's global logger.
	defer proxy.RedirectStdLog(log.Named("stdlog"))()
	vc, err := openVault(ctx, cfg, log)
	if err != nil {
		return err
	}
	if vc != nil {
		defer vc.Close()
	}
	m := metrics.New()
	consents, om, bo, err := openConsents(ctx, cfg, buildOptions(vc), m)
	if err != nil {
		return err
	}
	defer consents.Close()
	bo.Log, bo.TokenObserver, bo.OnReload = log, m, m.Reload
	bo.InterceptObserver = intercept.NewPrometheusObserver(m.Registry())
	if bo.Store, err = openStore(ctx, cfg, vc, log, m); err != nil {
		return err
	}
	defer bo.Store.Close()
	routes, err := route.Build(ctx, cfg, bo)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
	}
	gw, err := route.BuildProxyListener(ctx, cfg, bo)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: fmt.Errorf("credentials are not usable:\n%w", err)}
	}
	route.LogProxyListener(log, gw)
	opts := ServerOptions(cfg, log)
	opts.ProxyListener = gw
	opts.Observer = m
	if err := serveConsents(cfg, consents, om, routes, &opts, log); err != nil {
		return err
	}
	opts.Admin = func(s *proxy.Server) http.Handler { return admin.Handler(s, m.Handler()) }
	if vc != nil {
		opts.Degraded = func() error { return vc.Health().Err() }
		m.WatchDependency("vault", func() bool { return vc.Health().OK })
	}
	opts.Degraded = withStore(opts.Degraded, bo.Store)
	srv := proxy.New(routes, opts)
	for _, r := range srv.Routes() {
		for _, hc := range r.Certificates() {
			m.WatchCertificate(r.Name, hc.Kind, hc.Holder.Load)
		}
	}
	if gw.ServerCert != nil {
		m.WatchCertificate("", "proxy_tls", gw.ServerCert.Load)
	}
	if err := srv.Listen(); err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	log.Info("tokenproxy started", zap.String("version", version.String()), zap.Int("routes", len(srv.Routes())))
	return srv.Serve(ctx)
}
