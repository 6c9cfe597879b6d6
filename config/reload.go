package config

import (
	"time"

	"github.com/tokenproxy/tokenproxy/secret"
)

// DefaultReloadDebounce is how long a watched configuration file must stay
// unchanged before it is reloaded.
const DefaultReloadDebounce = 500 * time.Millisecond

// Admin configures what the admin listener does beyond its probes and metrics.
type Admin struct {
	// ReloadToken is the credential POST /-/reload requires, as
	// "Authorization: Bearer <token>". Without it, a reload over the admin
	// listener is allowed only while that listener binds loopback.
	ReloadToken secret.Ref `yaml:"reload_token"`
}

// Reload configures reloading the configuration without a restart (SIGHUP
// and POST /-/reload always reload; this adds watching the file).
type Reload struct {
	// Watch reloads the configuration when its file changes (the file's
	// directory is watched, so an editor's or the kubelet's replace-by-rename
	// is seen).
	Watch bool `yaml:"watch"`
	// Debounce is how long the file must stay unchanged before a reload.
	Debounce time.Duration `yaml:"debounce"`
}

// applyReloadDefaults fills the reload block's defaults.
func (c *Config) applyReloadDefaults() {
	if c.Reload.Debounce == 0 {
		c.Reload.Debounce = DefaultReloadDebounce
	}
}

// reload checks the admin and reload blocks.
func (v *validator) reload() {
	c := v.c
	if !c.Admin.ReloadToken.IsZero() {
		checkRef(&v.errs, "admin.reload_token", c.Admin.ReloadToken)
		if c.Admin.ReloadToken.Vault != nil && c.Vault == nil {
			v.add("vault", "missing; admin.reload_token refers to Vault, so give the server and how to log in")
		}
	}
	if c.Reload.Debounce < 0 {
		v.add("reload.debounce", "must not be negative")
	}
}
