package config

import "sort"

// Preset is the known URL set of an API.
type Preset struct {
	Description string
	Hosts       []string
	Upstream    string
	TokenType   string
	TokenURL    string
	CheckPath   string
}

// Presets are the APIs tokenproxy knows by name. The Banking Circle URLs are
// the ones its documentation gives: the API and the authorization service
// are separate hosts, in sandbox and in production (note the www).
var Presets = map[string]Preset{
	"bankingcircle-sandbox": { //nolint:gosec // TokenURL is an endpoint, not a credential
		Description: "Banking Circle sandbox",
		Hosts:       []string{"sandbox.bankingcircleconnect.com"},
		Upstream:    "https://sandbox.bankingcircleconnect.com",
		TokenType:   TokenBasicGet,
		TokenURL:    "https://authorizationsandbox.bankingcircleconnect.com/api/v1/authorizations/authorize",
		CheckPath:   "/api/v1/accounts?PageNumber=1&PageSize=1",
	},
	"bankingcircle-production": { //nolint:gosec // TokenURL is an endpoint, not a credential
		Description: "Banking Circle production",
		Hosts:       []string{"www.bankingcircleconnect.com"},
		Upstream:    "https://www.bankingcircleconnect.com",
		TokenType:   TokenBasicGet,
		TokenURL:    "https://authorization.bankingcircleconnect.com/api/v1/authorizations/authorize",
		CheckPath:   "/api/v1/accounts?PageNumber=1&PageSize=1",
	},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Token flows.
const (
	// TokenBasicGet is Banking Circle's flow: GET with HTTP Basic credentials over mTLS.
	TokenBasicGet = "basic-get"
)

// applyPreset fills fields the route left empty from its preset.
func (r *Route) applyPreset() {
	p, ok := Presets[r.Preset]
	if !ok {
		return
	}
	if len(r.Hosts) == 0 {
		r.Hosts = append([]string(nil), p.Hosts...)
	}
	if r.Upstream == "" {
		r.Upstream = p.Upstream
	}
	if r.Check.Path == "" {
		r.Check.Path = p.CheckPath
	}
	if p.TokenURL != "" {
		if r.Token == nil {
			r.Token = &Token{}
		}
		if r.Token.Type == "" {
			r.Token.Type = p.TokenType
		}
		if r.Token.URL == "" {
			r.Token.URL = p.TokenURL
		}
	}
}
