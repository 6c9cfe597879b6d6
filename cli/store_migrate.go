package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/assemble"
	"github.com/tokenproxy/tokenproxy/config"
)

func (e *env) storeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Maintain the consent store",
	}
	var path string
	migrate := &cobra.Command{
		Use:   "migrate --config FILE",
		Short: "Apply the Postgres consent store's schema migrations (those built into this binary)",
		Long: `Connects to consents.store.postgres and applies, in one transaction under an
advisory lock, the schema migrations built into this binary that the database
lacks (the schema_migrations table records them). Running it again applies
nothing. Replicas refuse to start on a schema older than theirs unless
migrate_on_start is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := e.storeAssembly(path, nil)
			if err != nil {
				return err
			}
			defer a.Close()
			applied, err := assemble.MigrateConsents(e.context(), a.Config, a.Options())
			if err != nil {
				return &ExitError{Code: ExitConfig, Err: err}
			}
			if len(applied) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "consent store schema is up to date")
				return nil
			}
			for _, m := range applied {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s\n", m)
			}
			return nil
		},
	}
	migrate.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	cmd.AddCommand(migrate, e.rekeyCommand())
	return cmd
}

// storeAssembly loads the configuration at path, checks it with pre (if
// not nil) and opens what reaching the consent store needs (Vault, when
// configured); the caller closes it.
func (e *env) storeAssembly(path string, pre func(*config.Config) error) (*assemble.Assembly, error) {
	cfg, err := e.loadConfig(path)
	if err != nil {
		return nil, err
	}
	if pre != nil {
		if err := pre(cfg); err != nil {
			return nil, &ExitError{Code: ExitConfig, Err: err}
		}
	}
	log, err := e.buildLogger(cfg.Log)
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Err: err}
	}
	a := assemble.New(cfg, assemble.Setup{Log: log})
	if cfg.Vault != nil {
		if err := a.OpenVault(e.context()); err != nil {
			_ = a.Close()
			return nil, &ExitError{Code: ExitConfig, Err: err}
		}
	}
	return a, nil
}
