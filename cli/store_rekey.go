package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
)

func (e *env) rekeyCommand() *cobra.Command {
	var path string
	batch := consentstore.DefaultRekeyBatch
	cmd := &cobra.Command{
		Use:   "rekey --config FILE",
		Short: "Re-seal every consent under the consent store's newest key",
		Long: `Re-seals every value of the consent store (consents and started consents)
that is not sealed under the first key of consents.store.*.keys, keeping each
consent's generation. It works in batches, one transaction each, and can be
interrupted and run again: it only looks for what is left.

postgres: run it while the replicas serve, once every replica lists the new key
first; a replica still sealing under an older key makes it stop and say so.
bbolt: the file belongs to one process; a running tokenproxy that lists the new
key first re-seals its store itself after start-up, so run this only while no
tokenproxy holds the file. vault_kv: Vault encrypts its storage with its own
keyring (vault operator rotate); there is nothing to re-seal.

When it ends with nothing left under an older key, remove that key from keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := e.storeAssembly(path, func(cfg *config.Config) error {
				switch cs := cfg.Consents; {
				case cs == nil:
					return errors.New("consents: missing; there is no consent store to re-seal")
				case cs.Store.VaultKV != nil:
					return errors.New("consents.store.vault_kv: Vault encrypts its storage with its own keyring (rotate it with `vault operator rotate`); tokenproxy seals nothing there to re-seal")
				}
				return nil
			})
			if err != nil {
				return err
			}
			defer a.Close()
			if err := a.OpenConsents(e.context()); err != nil {
				if errors.Is(err, consentstore.ErrHeld) {
					err = fmt.Errorf("%w\na running tokenproxy re-seals the store it holds by itself once it runs with the new key listed first", err)
				}
				return &ExitError{Code: ExitConfig, Err: err}
			}
			rk, ok := a.Consents.Store.(consentstore.Rekeyer)
			if !ok {
				return &ExitError{Code: ExitConfig, Err: errors.New("consents.store: this store does not re-seal")}
			}
			out := cmd.OutOrStdout()
			stale, err := rk.Stale(e.context())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%d values to re-seal under key id %q\n", stale, rk.SealingKey())
			st, err := rk.Rekey(e.context(), batch, func(st consentstore.RekeyStats) {
				fmt.Fprintf(cmd.ErrOrStderr(), "re-sealed %d\n", st.Resealed)
			})
			fmt.Fprintf(out, "re-sealed %d values; %d left under older keys\n", st.Resealed, st.Remaining)
			if err != nil {
				return fmt.Errorf("re-sealing stopped (run it again to go on): %w", err)
			}
			if st.Remaining > 0 {
				return fmt.Errorf("%d values are still sealed under older keys; run it again", st.Remaining)
			}
			fmt.Fprintln(out, "no value is sealed under an older key: older keys can be removed from keys")
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file")
	cmd.Flags().IntVar(&batch, "batch", batch, "values re-sealed per transaction")
	return cmd
}
