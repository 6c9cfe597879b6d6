// Package cli builds tokenproxy's command tree. NewCommand returns a fresh
// tree with no package-level state, so tests can run commands in-process
// with their own output and logger.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/internal/version"
	"github.com/tokenproxy/tokenproxy/metrics"
	"github.com/tokenproxy/tokenproxy/proxy"
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
	root.AddCommand(e.reloadCommand())
	root.PersistentFlags().StringVar(&e.logFormat, "log-format", "", "log format: json or console (overrides log.format)")
	root.AddCommand(e.runCommand(), e.validateCommand(), e.checkCommand(), e.onboardCommand(), e.storeCommand(), e.versionCommand())
	// Starter configurations for the presets (init.go).
	root.AddCommand(e.initCommand())
	root.AddCommand(e.statusCommand())
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
		if err = assemble.Check(cfg); err != nil {
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
			log, err := e.buildLogger(cfg.Log)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			a, err := assemble.Open(e.context(), cfg, assemble.Setup{Log: log, SkipGeneratedCA: true, Probe: true})
			var step *assemble.StepError
			if errors.As(err, &step) && step.Step == assemble.StepStore {
				err = fmt.Errorf("%w\n(validate connects to Redis and opens its key check value; --skip-credentials checks the configuration only)", err)
			}
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			defer a.Close()
			routes := a.Routes
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
			if a.Consents != nil && a.Consents.Snapshot() {
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
	var watch bool
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
			return serve(ctx, cfg, log, &reloading{path: path, watch: watch, load: func() (*config.Config, error) { return e.loadConfig(path) }})
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	cmd.Flags().BoolVar(&watch, "watch", false, "reload the configuration when its file changes (as reload.watch: true)")
	return cmd
}

// Serve opens the parts of cfg (assemble.Open), serves them until ctx
// ends, drains, and releases everything.
func Serve(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	return serve(ctx, cfg, log, nil)
}

// serve is Serve, reloading the configuration as rl says (nil: never).
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger, rl *reloading) error {
	// net/http's transport logs through the standard library's global logger.
	defer proxy.RedirectStdLog(log.Named("stdlog"))()
	tp, stopTracing, err := openTracing(ctx, log, os.Getenv)
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	defer flushTracing(log, stopTracing)
	a, err := assemble.Open(ctx, cfg, assemble.Setup{Log: log, Metrics: metrics.New(), TracerProvider: tp, Load: rl.loader()})
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	defer a.Close()
	srv, err := a.Server()
	if err != nil {
		return &ExitError{Code: ExitConfig, Err: err}
	}
	if err := srv.Listen(); err != nil {
		return &ExitError{Code: ExitFailure, Err: err}
	}
	log.Info("tokenproxy started", zap.String("version", version.String()), zap.Int("routes", len(srv.Routes())))
	defer rl.start(ctx, a, cfg, log)()
	return srv.Serve(ctx)
}
