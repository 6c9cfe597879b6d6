package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/diagnose"
)

func (e *env) checkCommand() *cobra.Command {
	var path, route string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check --config FILE [--route NAME]",
		Short: "Diagnose each route live: files, passcode, certificate, DNS, TCP, TLS, token, probe request",
		Long: `check runs every step a request depends on, against the real provider, and prints
one line per step with a verdict and, when a step fails, the fix. A Redis shared
store and a Postgres consent store get a line each first (reachable, authenticated,
TLS, schema version, key). The exit status
is 0 when every step passed, 1 when the worst was a warning, 2 when a step failed.
It prints no secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := e.loadConfig(path)
			if err != nil {
				return err
			}
			log, err := e.buildLogger(cfg.Log)
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			a := assemble.New(cfg, assemble.Setup{Log: log, Probe: true, ProbeTimeout: timeout})
			defer a.Close()
			if err := a.OpenVault(e.context()); err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			storeFailed := checkStore(e.context(), a, cmd.OutOrStdout())
			if checkConsents(e.context(), a, cmd.OutOrStdout()) {
				storeFailed = true
			}
			// A running tokenproxy may hold the consent store: the token
			// steps probe the endpoint without it.
			a.UseProbeConsents()
			rep, err := diagnose.Run(e.context(), cfg, route, cmd.OutOrStdout(), diagnose.Options{Timeout: timeout, Build: a.Options()})
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			switch {
			case rep.Worst == diagnose.Fail || storeFailed:
				return &ExitError{Code: ExitConfig, Err: fmt.Errorf("check failed")}
			case rep.Worst == diagnose.Warn:
				return &ExitError{Code: ExitFailure, Err: fmt.Errorf("check passed with warnings")}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "all checks passed")
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	cmd.Flags().StringVar(&route, "route", "", "check only this route")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "timeout of each network step")
	return cmd
}
