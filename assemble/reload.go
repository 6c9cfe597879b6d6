package assemble

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/intercept"
	"github.com/tokenproxy/tokenproxy/reload"
	"github.com/tokenproxy/tokenproxy/route"
)

// reloadTimeout bounds one reload: reading the file and building what changed.
const reloadTimeout = 2 * time.Minute

// RestartError is a reload refused because the new configuration changes
// settings that only a restart applies; nothing changed.
type RestartError struct {
	// Settings names each such setting (a configuration path).
	Settings []string
}

func (e *RestartError) Error() string {
	return "the new configuration changes settings that need a restart: " + strings.Join(e.Settings, ", ") +
		"; nothing was changed (restart tokenproxy to apply them, or undo them to reload the rest)"
}

// LastReload returns the last reload's result; the zero Result before any.
func (a *Assembly) LastReload() reload.Result { return a.reloads.Last() }

// Current returns the configuration served now: the start-up one, or the
// last one a reload applied.
func (a *Assembly) Current() *config.Config {
	if c := a.current.Load(); c != nil {
		return c
	}
	return a.Config
}

// Reload reads the configuration again (Setup.Load, the code `run` starts
// with: decoding, defaults, validation), and makes it the one served:
// routes whose configuration and dependencies are unchanged keep their
// runtime (token cache, budget, connections, certificates and their
// reloaders, signer); changed and added routes are built, then the server
// swaps its route table in one store, and replaced routes drain. A
// configuration that fails, or changes a setting that needs a restart
// (RestartError), changes nothing. Each outcome is logged, counted
// (tokenproxy_config_reloads_total) and kept for LastReload. Reloads run
// one at a time; trigger says who asked (reload.Trigger*).
func (a *Assembly) Reload(ctx context.Context, trigger string) reload.Result {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reloadTimeout)
	defer cancel()
	res := reload.Result{Trigger: trigger}
	err := a.reload(ctx, &res)
	res.Time = time.Now()
	var re *RestartError
	switch {
	case err == nil:
		res.Outcome = reload.Success
		a.Log.Info("configuration reloaded", zap.String("trigger", trigger), zap.Strings("kept", res.Kept),
			zap.Strings("rebuilt", res.Rebuilt), zap.Strings("added", res.Added), zap.Strings("removed", res.Removed))
	case errors.As(err, &re):
		res.Outcome, res.Error, res.Restart = reload.Refused, err.Error(), re.Settings
		a.Log.Error("configuration reload refused; the running configuration keeps serving", zap.String("trigger", trigger), zap.Error(err))
	default:
		res.Outcome, res.Error = reload.Failure, err.Error()
		a.Log.Error("configuration reload failed; the running configuration keeps serving", zap.String("trigger", trigger), zap.Error(err))
	}
	if a.Metrics != nil {
		a.Metrics.ConfigReload(string(res.Outcome))
	}
	a.reloads.Record(res)
	return res
}

func (a *Assembly) reload(ctx context.Context, res *reload.Result) error {
	if a.setup.Load == nil || a.srv == nil {
		return errors.New("this process cannot reload its configuration (it was not started from a file by tokenproxy run)")
	}
	cfg, err := a.setup.Load()
	if err != nil {
		return err
	}
	if settings := RestartSettings(a.Current(), cfg); len(settings) > 0 {
		return &RestartError{Settings: settings}
	}
	served := map[string]*route.Route{}
	for _, r := range a.srv.Routes() {
		served[r.Name] = r
	}
	prints := routePrints(cfg)
	routes, err := build(ctx, cfg, a.Options(), func(rc config.Route) *route.Route {
		r := served[rc.Name]
		if r != nil && (a.prints[rc.Name] == prints[rc.Name] || perCustomer(rc)) {
			// A per-customer route is the same configuration here
			// (RestartSettings): its consent source stays registered once.
			return r
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("credentials are not usable:\n%w", err)
	}
	if err := a.srv.Swap(routes); err != nil {
		return err
	}
	a.Routes, a.prints = routes, prints
	a.current.Store(cfg)
	for _, r := range routes {
		switch prev, ok := served[r.Name]; {
		case !ok:
			res.Added = append(res.Added, r.Name)
		case prev == r:
			res.Kept = append(res.Kept, r.Name)
		default:
			res.Rebuilt = append(res.Rebuilt, r.Name)
		}
		delete(served, r.Name)
		if m := a.Metrics; m != nil && !slices.Contains(res.Kept, r.Name) {
			m.ForgetCertificates(r.Name)
			for _, hc := range r.Certificates() {
				m.WatchCertificate(r.Name, hc.Kind, hc.Holder.Load)
			}
		}
	}
	for name := range served {
		res.Removed = append(res.Removed, name)
		if a.Metrics != nil {
			a.Metrics.ForgetCertificates(name)
		}
	}
	slices.Sort(res.Removed)
	return nil
}

// RestartSettings names the settings of next that differ from cur and that
// only a restart applies; none when next can be reloaded. Each is built
// once for the process, and what is built over it would have to be rebuilt
// with it:
//
//   - listen.*: the proxy and admin listeners are bound at start (the
//     reload request itself arrives on the admin listener);
//     listen.proxy_tls is the proxy listener's TLS;
//   - vault: the Vault login and its renewal, which every Vault secret,
//     certificate and key of the process uses;
//   - store: the shared store's connection and key, which tokens,
//     budgets and locks of every route use, and other replicas share;
//   - consents: the consent store, the consent API's listener, its census,
//     webhooks and keep-alive jobs; for the same reason a route with
//     token.type authorization_code cannot be added, removed or changed;
//   - interception, and which hosts are intercepted: the CA and the leaf
//     certificates it issues, for those hosts only;
//   - log: the logger is built before anything else;
//   - shutdown_grace, certificate_expiry_warning: the server's own timers;
//   - admin, reload: the reload endpoint's credential and the file watch.
func RestartSettings(cur, next *config.Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	diff("listen.proxy", cur.Listen.Proxy, next.Listen.Proxy)
	diff("listen.admin", cur.Listen.Admin, next.Listen.Admin)
	diff("listen.allow_non_loopback", cur.Listen.AllowNonLoopback, next.Listen.AllowNonLoopback)
	diff("listen.proxy_tls", cur.Listen.ProxyTLS, next.Listen.ProxyTLS)
	diff("vault", cur.Vault, next.Vault)
	diff("store", cur.Store, next.Store)
	diff("consents", cur.Consents, next.Consents)
	diff("interception", cur.Interception, next.Interception)
	diff("routes[].intercept (the hosts intercepted)", interceptedHosts(cur), interceptedHosts(next))
	diff("log", cur.Log, next.Log)
	diff("shutdown_grace", cur.ShutdownGrace, next.ShutdownGrace)
	diff("certificate_expiry_warning", cur.CertificateExpiryWarning, next.CertificateExpiryWarning)
	diff("admin", cur.Admin, next.Admin)
	diff("reload", cur.Reload, next.Reload)
	perCustomerRoutes := func(c *config.Config) map[string]string {
		m := map[string]string{}
		for _, rc := range c.Routes {
			if perCustomer(rc) {
				m[rc.Name] = routePrint(c, rc, false)
			}
		}
		return m
	}
	pc, pn := perCustomerRoutes(cur), perCustomerRoutes(next)
	var names []string
	for name := range pc {
		if pc[name] != pn[name] {
			names = append(names, name)
		}
	}
	for name := range pn {
		if _, ok := pc[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		out = append(out, "routes["+name+"] (token.type authorization_code)")
	}
	return out
}

func perCustomer(rc config.Route) bool {
	return rc.Token != nil && rc.Token.Type == config.TokenAuthorizationCode
}

// routePrints are the routes' prints (routePrint), by name.
func routePrints(c *config.Config) map[string]string {
	m := make(map[string]string, len(c.Routes))
	for _, rc := range c.Routes {
		m[rc.Name] = routePrint(c, rc, true)
	}
	return m
}

// interceptedHosts are the normalised hosts of the routes with intercept: true, sorted.
func interceptedHosts(c *config.Config) []string {
	var hosts []string
	for _, rc := range c.Routes {
		if !rc.Intercept {
			continue
		}
		for _, h := range rc.Hosts {
			if n, err := intercept.NormalizeHost(h); err == nil && !slices.Contains(hosts, n) {
				hosts = append(hosts, n)
			}
		}
	}
	slices.Sort(hosts)
	return hosts
}

// routePrint is what a built route depends on, as one string: the route's
// configuration (secret references, not their values, which are read as
// they are used), the blocks building it reads (vault, store, the callers
// when it restricts who may use it, consents for a per-customer route),
// and the content of the files read only when it is built (tls.ca_file,
// token.private_key.file) when withFiles. Two equal prints build the same
// route, so a reload keeps the one running. Client certificates and signing
// keys have their own reloaders and are not part of it.
func routePrint(c *config.Config, rc config.Route, withFiles bool) string {
	deps := struct {
		Route    config.Route
		Vault    *config.Vault
		Store    config.Store
		Callers  []config.Caller
		Consents *config.Consents
		Files    map[string]string
	}{Route: rc, Vault: c.Vault, Store: c.Store, Files: map[string]string{}}
	if rc.Allow != nil {
		deps.Callers = c.Callers
	}
	if perCustomer(rc) {
		deps.Consents = c.Consents
	}
	var files []string
	if withFiles {
		files = append(files, rc.TLS.CAFile)
		if t := rc.Token; t != nil && t.PrivateKey != nil {
			files = append(files, t.PrivateKey.File)
		}
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if b, err := os.ReadFile(f); err == nil { //nolint:gosec // files the configuration names
			s := sha256.Sum256(b)
			deps.Files[f] = hex.EncodeToString(s[:])
		} else {
			deps.Files[f] = "unreadable" // the build reports why
		}
	}
	b, err := json.Marshal(deps)
	if err != nil {
		// Not expected of the schema's plain data; a print that never
		// matches rebuilds the route, which is always correct.
		return "unprintable " + err.Error() + " " + time.Now().String()
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
