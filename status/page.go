package status

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"time"
)

// Handler serves the provider's Snapshot: GET /status as an HTML page (no
// script, no external asset; it reloads itself every 30 s) and GET
// /status.json as JSON. Mount it on the admin listener.
func Handler(p *Provider) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s := p.Collect(r.Context())
		var buf bytes.Buffer
		if err := page.Execute(&buf, view{s}); err != nil {
			http.Error(w, "rendering the status page failed", http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(buf.Bytes())
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		s := p.Collect(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	return mux
}

// view adds what the template computes from a Snapshot.
type view struct{ *Snapshot }

// In is the time from the snapshot to t, for people ("in 3d 4h", "5m ago").
func (v view) In(t *time.Time) string {
	if t == nil {
		return ""
	}
	d := t.Sub(v.GeneratedAt)
	if d < 0 {
		return Duration(-d) + " ago"
	}
	return "in " + Duration(d)
}

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"secs": func(f float64) string { return Duration(time.Duration(f * float64(time.Second))) },
	"int":  func(f float64) int64 { return int64(f) },
}).Parse(pageHTML))

const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tokenproxy status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; } h3 { font-size: 1em; margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .3em 0 .8em; } th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17692c; font-weight: 600; } .bad { color: #a40e0e; font-weight: 600; } .warn { color: #8a5a00; font-weight: 600; }
.muted { color: #666; } section.route { border-top: 2px solid #ddd; margin-top: 1.2em; }
</style>
</head>
<body>
<h1>tokenproxy status</h1>
<p class="muted">Generated <span data-field="generated-at">{{.GeneratedAt.Format "2006-01-02T15:04:05Z07:00"}}</span>{{with .Version}} · version {{.}}{{end}} · this page reloads every 30 s · <a href="/status.json">JSON</a> · <a href="/metrics">metrics</a></p>
<table>
<tr><th>Ready</th><td data-field="ready">{{if .Ready}}<span class="ok">yes</span>{{else}}<span class="bad">no</span>{{end}} ({{.Readiness}})</td></tr>
<tr><th>Last reload</th><td data-field="last-reload">{{with .LastReload}}{{if .Never}}never{{else}}{{ts .At}} ({{$.In .At}}): {{if .OK}}<span class="ok">applied</span>{{else}}<span class="bad">refused</span>{{end}}{{with .Message}} — {{.}}{{end}}{{end}}{{end}}</td></tr>
</table>

<h2>Dependencies</h2>
{{if .Dependencies}}<table>
<tr><th>Dependency</th><th>State</th><th>Since</th><th>Error</th></tr>
{{range .Dependencies}}<tr data-dependency="{{.Name}}"><td>{{.Name}}</td><td data-field="up">{{if .Up}}<span class="ok">up</span>{{else}}<span class="bad">down</span>{{end}}</td><td>{{ts .Since}}</td><td>{{.Error}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None configured (no Vault, shared store or consent store).</p>{{end}}

{{with .Consents}}<h2>Consents</h2>
<p class="muted">From the census {{with .TakenAt}}taken {{ts .}} ({{$.In .}}){{else}}not taken yet{{end}}.{{with .Error}} <span class="bad">Last census failed: {{.}}</span>{{end}}</p>
<table>
<tr><th>Route</th><th>active</th><th>refreshing</th><th>invalid</th><th>expiring soon</th></tr>
{{range .Routes}}<tr data-consents="{{.Route}}"><td>{{.Route}}</td><td class="n" data-field="active">{{.Active}}</td><td class="n" data-field="refreshing">{{.Refreshing}}</td><td class="n" data-field="invalid">{{.Invalid}}</td><td class="n" data-field="expiring">{{.Expiring}}</td></tr>
{{end}}</table>{{end}}

<h2>Routes</h2>
{{range .Routes}}<section class="route" data-route="{{.Name}}">
<h3>{{.Name}}</h3>
<p class="muted">{{range $i, $h := .Hosts}}{{if $i}}, {{end}}{{$h}}{{end}} → {{.Upstream}}</p>

<table>
<tr><th>Requests</th><td class="n" data-field="requests-total">{{.Requests.Total}}</td></tr>
<tr><th>tokenproxy errors</th><td class="n" data-field="requests-errors">{{.Requests.Errors}}</td></tr>
<tr><th>By status</th><td data-field="requests-by-status">{{range $k, $v := .Requests.ByStatus}}<span data-status="{{$k}}">{{$k}}: {{$v}}</span> {{end}}</td></tr>
{{if .Requests.ByError}}<tr><th>By error</th><td data-field="requests-by-error">{{range $k, $v := .Requests.ByError}}<span data-error="{{$k}}">{{$k}}: {{$v}}</span> {{end}}</td></tr>{{end}}
</table>

{{if .Certificates}}<table>
<tr><th>Certificate</th><th>Source</th><th>Subject</th><th>Issuer</th><th>Not after</th><th>Expires</th><th>Last rotation</th></tr>
{{range .Certificates}}<tr data-certificate="{{.Kind}}">
<td>{{.Kind}}</td><td data-field="source">{{.Source}}</td>
{{if .Loaded}}<td data-field="subject">{{.Subject}}</td><td data-field="issuer">{{.Issuer}}</td><td data-field="not-after">{{ts .NotAfter}}</td>
<td data-field="expires-in" data-seconds="{{int .ExpiresInSeconds}}">{{if lt .ExpiresInSeconds 0.0}}<span class="bad">expired {{secs .ExpiresInSeconds}} ago</span>{{else if lt .ExpiresInSeconds 1209600.0}}<span class="warn">in {{secs .ExpiresInSeconds}}</span>{{else}}in {{secs .ExpiresInSeconds}}{{end}}</td>
{{else}}<td colspan="4" class="bad">not loaded</td>{{end}}
<td data-field="stored-at">{{if .Rotations}}{{ts .StoredAt}} ({{$.In .StoredAt}}), {{.Rotations}} since start{{else}}none since start (loaded {{ts .StoredAt}}){{end}}</td>
</tr>
{{end}}</table>{{end}}

{{with .Token}}<table>
<tr><th>Token</th><td data-field="token-kind">{{.Kind}}</td></tr>
{{if eq .Kind "per_customer"}}<tr><th>Customers' tokens held</th><td class="n" data-field="token-customers">{{.Customers}}</td></tr>
{{else}}<tr><th>Cached</th><td data-field="token-cached">{{if .Cached}}yes{{else}}no{{end}}</td></tr>
<tr><th>Expires</th><td data-field="token-expires">{{with .ExpiresAt}}{{ts .}} ({{$.In .}}){{else}}—{{end}}</td></tr>{{end}}
<tr><th>Last fetch</th><td data-field="token-last-fetch">{{with .LastFetch}}{{ts .}} ({{$.In .}}){{else}}never{{end}}{{with .LastResult}}: <span data-field="token-last-result">{{.}}</span>{{end}}</td></tr>
<tr><th>Last error</th><td data-field="token-last-error">{{with .LastError}}<span class="bad">{{.}}</span>{{else}}none{{end}}</td></tr>
<tr><th>Cache hits</th><td class="n" data-field="token-hits">{{.Hits}}</td></tr>
<tr><th>Fetches</th><td data-field="token-fetches">{{range $k, $v := .Fetches}}<span data-result="{{$k}}">{{$k}}: {{$v}}</span> {{end}}</td></tr>
</table>{{end}}

{{with .Budget}}<table>
<tr><th>Token budget ({{.AuthHost}})</th><td data-field="budget-used">{{if .Error}}<span class="bad">{{.Error}}</span>{{else}}{{.Used}} / {{.Limit}}{{end}}</td></tr>
<tr><th>Window</th><td>{{secs .WindowSeconds}} after each request completes{{if .Shared}} (shared by every replica){{else}} (this process){{end}}</td></tr>
<tr><th>Next free slot</th><td data-field="budget-next">{{if .FreeNow}}now{{else if .Never}}never (the budget is zero){{else}}{{ts .NextFree}} ({{$.In .NextFree}}){{end}}{{with .BackoffUntil}} <span class="warn">backing off after a 429 until {{ts .}}</span>{{end}}</td></tr>
</table>{{end}}
</section>
{{else}}<p class="muted">No routes.</p>
{{end}}
</body>
</html>
`
