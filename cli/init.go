package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/internal/atomicfile"
)

// initCommand is `tokenproxy init`: a commented starter configuration for a
// preset, and what the operator must fill in.
func (e *env) initCommand() *cobra.Command {
	var preset, out string
	var list, force bool
	cmd := &cobra.Command{
		Use:   "init --preset NAME [--out FILE]",
		Short: "Write a commented starter configuration for a bank's preset (--list: the presets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if list {
				for _, name := range config.PresetNames() {
					fmt.Fprintf(w, "%-26s %s\n", name, config.Presets[name].Description)
				}
				return nil
			}
			if preset == "" {
				return usageError(fmt.Errorf("--preset is required; one of: %s (or --list)", presetList()))
			}
			yaml, err := config.StarterConfig(preset)
			if err != nil {
				return usageError(err)
			}
			notes := w
			if out == "-" {
				if _, err := io.WriteString(w, yaml); err != nil {
					return fmt.Errorf("writing the configuration: %w", err)
				}
				notes = cmd.ErrOrStderr()
			} else {
				if err := writeStarter(out, []byte(yaml), force); err != nil {
					return err
				}
				fmt.Fprintf(w, "wrote %s (preset %s)\n", out, preset)
			}
			fmt.Fprintln(notes, "\nFill in before starting tokenproxy:")
			for _, f := range config.Presets[preset].Starter.Fill {
				fmt.Fprintf(notes, "  - %s\n", f)
			}
			name := out
			if out == "-" {
				name = "FILE"
			}
			fmt.Fprintf(notes, "\nThen: tokenproxy validate --config %s && tokenproxy run --config %s\n", name, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "", "the preset: "+presetList())
	cmd.Flags().StringVarP(&out, "out", "o", "tokenproxy.yaml", `the file to write ("-": standard output)`)
	cmd.Flags().BoolVar(&list, "list", false, "list the presets, one line each")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}

func presetList() string {
	s := ""
	for i, n := range config.PresetNames() {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// writeStarter writes the starter file, refusing to replace one unless force.
func writeStarter(path string, data []byte, force bool) error {
	if force {
		return atomicfile.Write(path, data, 0o644) //nolint:wrapcheck // its errors name the file
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644) //nolint:gosec // the operator names the file; it holds no secret
	if errors.Is(err, fs.ErrExist) {
		return usageError(fmt.Errorf("%s exists; give another --out, or --force to overwrite it", path))
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
