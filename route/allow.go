package route

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strings"

	"github.com/tokenproxy/tokenproxy/callercert"
)

// Denied is a request the route's allow policy refuses.
type Denied struct {
	Status  int
	Code    string
	Message string
	// Challenge, when set, is the Proxy-Authenticate value to send.
	Challenge string
}

func (d *Denied) Error() string { return d.Code + ": " + d.Message }

// Authorize returns nil when req may use the route, and the caller's name
// when one authenticated (gateway mode).
func (r *Route) Authorize(req *http.Request) (string, *Denied) {
	if r.allow == nil {
		return "", nil
	}
	return r.allow.check(req)
}

// Gateway-mode error codes, sent to the app in the proxy's JSON error.
const (
	CodeCallerAuthRequired = "caller_authentication_required"
	CodeCallerNotAllowed   = "caller_not_allowed"
)

// Callers holds the digests of each gateway caller's "name:password",
// resolved once at start-up.
type Callers map[string][32]byte

// Add records the password of the caller name.
func (c Callers) Add(name, password string) {
	c[name] = sha256.Sum256([]byte(name + ":" + password))
}

// AllowPolicy decides who may use a route.
type AllowPolicy struct {
	route    string
	prefixes []netip.Prefix
	callers  []string
	all      Callers
	certs    *callercert.Mapper // callers by client certificate; nil when none
}

// NewAllowPolicy returns who may use route: apps from the source prefixes
// (any when empty) and, when callers is not empty, only those gateway
// callers, authenticated by their password in all or by their client
// certificate through certs (nil when no caller has one).
func NewAllowPolicy(route string, prefixes []netip.Prefix, callers []string, all Callers, certs *callercert.Mapper) *AllowPolicy {
	return &AllowPolicy{route: route, prefixes: prefixes, callers: callers, all: all, certs: certs}
}

// check returns nil when req may use the route, and the caller's name when
// one authenticated.
func (p *AllowPolicy) check(req *http.Request) (string, *Denied) {
	if len(p.prefixes) > 0 {
		ap, err := netip.ParseAddrPort(req.RemoteAddr)
		ok := false
		if err == nil {
			ip := ap.Addr().Unmap()
			for _, pf := range p.prefixes {
				if pf.Contains(ip) {
					ok = true
					break
				}
			}
		}
		if !ok {
			return "", &Denied{Status: http.StatusForbidden, Code: CodeCallerNotAllowed,
				Message: "source address " + ap.Addr().Unmap().String() + " may not use route " + p.route}
		}
	}
	if len(p.callers) == 0 {
		return "", nil
	}
	name, ok, denied := p.identify(req)
	if denied != nil {
		return "", denied
	}
	if !ok {
		return "", &Denied{Status: http.StatusProxyAuthRequired, Code: CodeCallerAuthRequired,
			Challenge: `Basic realm="tokenproxy"`,
			Message:   "route " + p.route + " needs the caller's credentials in Proxy-Authorization: Basic (e.g. HTTP_PROXY=http://NAME:PASSWORD@host:port)"}
	}
	for _, c := range p.callers {
		if c == name {
			return name, nil
		}
	}
	return name, &Denied{Status: http.StatusForbidden, Code: CodeCallerNotAllowed,
		Message: "caller " + name + " may not use route " + p.route}
}

// tunnelCallerKey marks a request read from a CONNECT tunnel whose caller
// was authenticated when the tunnel was opened.
type tunnelCallerKey struct{}

// WithTunnelCaller returns ctx for the requests read from a CONNECT tunnel
// whose caller was authorised (by Authorize on the CONNECT request) before
// the tunnel was accepted: they carry no Proxy-Authorization of their own.
func WithTunnelCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, tunnelCallerKey{}, caller)
}

// identify finds the caller of req: the tunnel's, else the client
// certificate of a TLS proxy connection, else Basic credentials. A verified
// certificate that names no caller is refused outright.
func (p *AllowPolicy) identify(req *http.Request) (string, bool, *Denied) {
	if name, ok := req.Context().Value(tunnelCallerKey{}).(string); ok && name != "" {
		return name, true, nil
	}
	if p.certs != nil {
		name, presented, err := p.certs.FromConnection(req.TLS)
		if presented {
			if err != nil {
				return "", false, &Denied{Status: http.StatusForbidden, Code: CodeCallerNotAllowed,
					Message: "the client certificate names no caller (" + err.Error() + "); add it to callers[].certificate"}
			}
			return name, true, nil
		}
	}
	name, ok := p.authenticate(req.Header.Get("Proxy-Authorization"))
	return name, ok, nil
}

// authenticate checks Basic credentials against every caller in constant time.
func (p *AllowPolicy) authenticate(h string) (string, bool) {
	const prefix = "Basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return "", false
	}
	name, _, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", false
	}
	got := sha256.Sum256(raw)
	want, known := p.all[name]
	if !known {
		want = sha256.Sum256([]byte("\x00unknown"))
	}
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
		return "", false
	}
	return name, true
}
