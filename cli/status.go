package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenproxy/tokenproxy/config"
	"github.com/tokenproxy/tokenproxy/status"
)

func (e *env) statusCommand() *cobra.Command {
	var path, addr string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [--admin ADDR | --config FILE]",
		Short: "Print the status page of a running tokenproxy (its admin listener's /status.json) as tables",
		Long: `status reads /status.json from the admin listener of a running tokenproxy and prints
it as tables: each route's certificates, token, token budget and request counts,
the dependencies' health, the consents by state and the last reload. The address
is --admin, else the configuration's listen.admin (--config), else ` + config.DefaultAdminAddr + `.
It prints no secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" && path != "" {
				cfg, err := e.loadConfig(path)
				if err != nil {
					return err
				}
				addr = cfg.Listen.Admin
			}
			if addr == "" {
				addr = config.DefaultAdminAddr
			}
			if addr == "off" {
				return &ExitError{Code: ExitConfig, Err: errors.New("the admin listener is off (listen.admin: off); status reads it")}
			}
			ctx, cancel := context.WithTimeout(e.context(), timeout)
			defer cancel()
			body, s, err := fetchStatus(ctx, addr)
			if err != nil {
				return &ExitError{Code: ExitFailure, Err: err}
			}
			if asJSON {
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			return printStatus(cmd.OutOrStdout(), s)
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "", "the admin listener's address (host:port or URL)")
	cmd.Flags().StringVarP(&path, "config", "c", "", "configuration file whose listen.admin to read")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print /status.json as it is")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the answer")
	return cmd
}

// statusURL is the /status.json URL of an admin address: a URL as it is,
// a host:port over http, an unspecified host as loopback.
func statusURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/") + "/status.json"
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = "127.0.0.1"
		}
		addr = net.JoinHostPort(host, port)
	}
	return "http://" + addr + "/status.json"
}

func fetchStatus(ctx context.Context, addr string) ([]byte, *status.Snapshot, error) {
	u := statusURL(addr)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s (is tokenproxy running with its admin listener there?): %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%s answered %s (a tokenproxy without the status page?)", u, resp.Status)
	}
	var s status.Snapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, nil, fmt.Errorf("%s: not a status snapshot: %w", u, err)
	}
	return body, &s, nil
}

// printStatus writes s as tables.
func printStatus(w io.Writer, s *status.Snapshot) error {
	now := s.GeneratedAt
	rel := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		if d := t.Sub(now); d >= 0 {
			return "in " + status.Duration(d)
		}
		return status.Duration(now.Sub(*t)) + " ago"
	}
	ready := "ready"
	if !s.Ready {
		ready = "NOT READY"
	}
	reload := "never"
	if r := s.LastReload; !r.Never {
		verdict := "applied"
		if !r.OK {
			verdict = "refused"
		}
		reload = fmt.Sprintf("%s %s", verdict, rel(r.At))
		if r.Message != "" {
			reload += ": " + r.Message
		}
	}
	name := s.Version // "tokenproxy <version>"
	if name == "" {
		name = "tokenproxy"
	}
	fmt.Fprintf(w, "%s at %s: %s (%s); last reload: %s\n", name, now.Format(time.RFC3339), ready, s.Readiness, reload)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	section := func(title string) {
		_ = tw.Flush()
		fmt.Fprintln(w, "\n"+title)
	}
	row := func(cols ...any) {
		parts := make([]string, len(cols))
		for i, c := range cols {
			parts[i] = fmt.Sprint(c)
		}
		fmt.Fprintln(tw, strings.Join(parts, "\t"))
	}

	if len(s.Dependencies) > 0 {
		section("DEPENDENCIES")
		row("NAME", "STATE", "SINCE", "ERROR")
		for _, d := range s.Dependencies {
			state := "up"
			if !d.Up {
				state = "DOWN"
			}
			row(d.Name, state, rel(d.Since), dash(d.Error))
		}
	}

	section("ROUTES")
	row("ROUTE", "REQUESTS", "ERRORS", "TOKEN", "TOKEN EXPIRES", "LAST FETCH", "BUDGET", "NEXT FREE")
	for _, r := range s.Routes {
		token, expires, fetch, budget, next := "-", "-", "-", "-", "-"
		if t := r.Token; t != nil {
			switch {
			case t.Kind == "per_customer":
				token = fmt.Sprintf("%d customers", t.Customers)
			case t.Cached:
				token = "cached"
			default:
				token = "none"
			}
			if t.ExpiresAt != nil && t.Kind != "per_customer" {
				expires = rel(t.ExpiresAt)
			}
			if t.LastFetch != nil {
				fetch = rel(t.LastFetch) + " " + t.LastResult
			}
		}
		if b := r.Budget; b != nil {
			budget = fmt.Sprintf("%d/%d", b.Used, b.Limit)
			if b.Shared {
				budget += " shared"
			}
			switch {
			case b.Error != "":
				budget, next = "unreadable", "-"
			case b.FreeNow:
				next = "now"
			case b.Never:
				next = "never"
			default:
				next = rel(b.NextFree)
			}
			if b.BackoffUntil != nil {
				next += " (429 back-off)"
			}
		}
		row(r.Name, r.Requests.Total, r.Requests.Errors, token, expires, fetch, budget, next)
	}

	section("CERTIFICATES")
	row("ROUTE", "KIND", "SOURCE", "SUBJECT", "ISSUER", "NOT AFTER", "EXPIRES", "LAST ROTATION")
	for _, r := range s.Routes {
		for _, c := range r.Certificates {
			if !c.Loaded {
				row(r.Name, c.Kind, dash(c.Source), "NOT LOADED", "-", "-", "-", "-")
				continue
			}
			rot := "none since start"
			if c.Rotations > 0 {
				rot = fmt.Sprintf("%s (%d)", rel(c.StoredAt), c.Rotations)
			}
			row(r.Name, c.Kind, dash(c.Source), c.Subject, c.Issuer, c.NotAfter.Format("2006-01-02 15:04"),
				rel(c.NotAfter), rot)
		}
	}

	var errs []string
	for _, r := range s.Routes {
		if t := r.Token; t != nil && t.LastError != "" {
			errs = append(errs, r.Name+": "+t.LastError)
		}
		if b := r.Budget; b != nil && b.Error != "" {
			errs = append(errs, r.Name+" budget: "+b.Error)
		}
	}
	if len(errs) > 0 {
		section("LAST TOKEN ERRORS")
		sort.Strings(errs)
		for _, e := range errs {
			row(e)
		}
	}

	if c := s.Consents; c != nil {
		title := "CONSENTS (census not taken yet)"
		if c.TakenAt != nil {
			title = "CONSENTS (census " + rel(c.TakenAt) + ")"
		}
		if c.Error != "" {
			title += " last census failed: " + c.Error
		}
		section(title)
		row("ROUTE", "ACTIVE", "REFRESHING", "INVALID", "EXPIRING")
		for _, r := range c.Routes {
			row(r.Route, r.Active, r.Refreshing, r.Invalid, r.Expiring)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
