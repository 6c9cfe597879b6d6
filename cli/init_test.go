package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/config"
)

// The file init writes validates as written, for every preset, and init
// names what to fill in.
func TestInitWritesAValidConfiguration(t *testing.T) {
	for _, name := range config.PresetNames() {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "tokenproxy.yaml")
			code, stdout, stderr := run(t, "init", "--preset", name, "--out", out)
			if code != cli.ExitOK {
				t.Fatalf("init exit %d: %s%s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, "wrote "+out) || !strings.Contains(stdout, "Fill in before starting tokenproxy:") {
				t.Fatalf("init output:\n%s", stdout)
			}
			for _, f := range config.Presets[name].Starter.Fill {
				if !strings.Contains(stdout, f) {
					t.Errorf("init does not say %q", f)
				}
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), "preset: "+name) || !strings.Contains(string(data), "# ") {
				t.Fatalf("written file:\n%s", data)
			}
			code, stdout, stderr = run(t, "validate", "--config", out, "--skip-credentials")
			if code != cli.ExitOK || !strings.Contains(stdout, "configuration OK") {
				t.Fatalf("validate exit %d:\n%s%s\n%s", code, stdout, stderr, data)
			}
		})
	}
}

// The hub's starter needs only an environment variable (its certificate is
// for production): with it set, the full validate passes, secrets read.
func TestInitThenValidateWithTheEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "hub.yaml")
	if code, stdout, stderr := run(t, "init", "--preset", "banqware-psd2hub", "--out", out); code != cli.ExitOK {
		t.Fatalf("init exit %d: %s%s", code, stdout, stderr)
	}
	t.Setenv("PSD2HUB_CLIENT_SECRET", "")
	if code, _, stderr := run(t, "validate", "--config", out); code != cli.ExitConfig || !strings.Contains(stderr, "PSD2HUB_CLIENT_SECRET") {
		t.Fatalf("validate without the variable: exit %d: %s", code, stderr)
	}
	t.Setenv("PSD2HUB_CLIENT_SECRET", "hub-s3cret-8812")
	code, stdout, stderr := run(t, "validate", "--config", out)
	if code != cli.ExitOK || !strings.Contains(stdout, "route psd2hub: api.banqware.com -> https://api.banqware.com; token credentials present") {
		t.Fatalf("validate exit %d:\n%s%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "hub-s3cret-8812") {
		t.Fatal("the secret was printed")
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tokenproxy.yaml")
	write(t, out, "# mine\n")
	code, _, stderr := run(t, "init", "--preset", "berlingroup", "--out", out)
	if code != cli.ExitUsage || !strings.Contains(stderr, out+" exists; give another --out, or --force to overwrite it") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if data, _ := os.ReadFile(out); string(data) != "# mine\n" {
		t.Fatalf("the file was changed: %q", data)
	}
	if code, _, stderr := run(t, "init", "--preset", "berlingroup", "--out", out, "--force"); code != cli.ExitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "preset: berlingroup") {
		t.Fatalf("--force did not write: %q", data)
	}
}

func TestInitUnknownPresetAndList(t *testing.T) {
	code, _, stderr := run(t, "init", "--preset", "stet", "--out", filepath.Join(t.TempDir(), "x.yaml"))
	if code != cli.ExitUsage || !strings.Contains(stderr, `unknown preset "stet"; known presets: `+strings.Join(config.PresetNames(), ", ")) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, stdout, _ := run(t, "init", "--list")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != cli.ExitOK || len(lines) != len(config.Presets) {
		t.Fatalf("--list: exit %d:\n%s", code, stdout)
	}
	for i, name := range config.PresetNames() {
		if !strings.HasPrefix(lines[i], name+" ") || !strings.Contains(lines[i], config.Presets[name].Description) {
			t.Errorf("line %d: %q", i, lines[i])
		}
	}
	code, stdout, stderr = run(t, "init", "--preset", "bpce-sandbox", "--out", "-")
	if code != cli.ExitOK || !strings.HasPrefix(stdout, "# tokenproxy configuration") || !strings.Contains(stderr, "TOKENPROXY_CONSENT_KEY") {
		t.Fatalf("--out -: exit %d:\n%s\n%s", code, stdout, stderr)
	}
}
