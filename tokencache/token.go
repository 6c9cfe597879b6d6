// Package tokencache keeps the bearer tokens a Source fetches (package
// tokenclient and package oauth hold the sources) and reuses them until they
// expire. A token is refreshed ahead of its expiry while callers keep using
// it; concurrent callers share one in-flight fetch per subject; fetches to
// one authorization host are paced by a Pacer that keeps them within the
// provider's per-minute budget as the provider counts it (by arrival) and
// backs off after a 429. A Store shares tokens, the fetch and the budget
// between replicas.
package tokencache

import (
	"fmt"
	"time"
)

// Token is a bearer token and when it expires. Its value is never printed:
// String and Format redact it.
type Token struct {
	// Value is the access token.
	Value string
	// Type is the token type the provider named ("Bearer" when it named none).
	Type string
	// Expiry is when the provider says the token stops working.
	Expiry time.Time
	// Header is the ready-made Authorization header value, "Bearer <token>".
	Header string
	// Issued is when the token was obtained (the response's arrival); the
	// lifetime Expiry-Issued caps the cache's skew. Zero when unknown.
	Issued time.Time
	// Binding names what the token is bound to, "" for a bearer token:
	// "jkt:<thumbprint>" for a DPoP key (RFC 9449), "x5t#S256:<thumbprint>"
	// for a client certificate (RFC 8705). A cache whose route is bound to
	// something else does not use the token (Options.Binding).
	Binding string

	refreshAt   time.Time // from here a refresh runs ahead: Expiry less twice the cache's effective skew
	usableUntil time.Time // from here the token is no longer sent: Expiry less the effective skew
}

// String never returns the token.
func (t *Token) String() string { return "[token redacted]" }

// Format never prints the token.
func (t *Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[token redacted]")) }
