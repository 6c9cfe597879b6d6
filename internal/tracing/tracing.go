// Package tracing holds tokenproxy's span names, attribute keys and the one
// way a package opens a child span. It uses the OpenTelemetry API only: the
// SDK and its exporters are set up by the command (cli), and with no
// provider every helper here is a no-op that allocates nothing.
//
// A child span is opened only under a recording parent: the proxy's server
// span carries the provider down the request (trace.Span.TracerProvider),
// so the packages on the request path hold no provider and no global.
//
// Attributes never carry a header value, a token, a code, a key or a secret:
// only names (routes, profiles, stores), outcomes and status codes.
package tracing

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of every tokenproxy span.
const Scope = "github.com/tokenproxy/tokenproxy"

// Span names.
const (
	SpanTokenLookup  = "token lookup"
	SpanTokenRequest = "token request"
	SpanSign         = "sign"
	SpanTransitSign  = "vault transit sign"
	SpanUpstream     = "upstream"
	EventBudgetWait  = "budget wait"
)

// Attribute keys of tokenproxy's own attributes (the others follow the
// OpenTelemetry semantic conventions).
const (
	KeyRoute         = attribute.Key("tokenproxy.route")
	KeyTokenResult   = attribute.Key("tokenproxy.token.result") // hit, wait, fetch
	KeyWaitSeconds   = attribute.Key("tokenproxy.budget.wait_seconds")
	KeyGrant         = attribute.Key("tokenproxy.token.grant")
	KeyProfile       = attribute.Key("tokenproxy.signing.profile")
	KeySigningKey    = attribute.Key("tokenproxy.signing.key") // local, vault_transit
	KeyTransitKey    = attribute.Key("tokenproxy.vault.transit.key")
	KeyStoreKind     = attribute.Key("tokenproxy.consent_store.kind")
	KeyStoreOp       = attribute.Key("tokenproxy.consent_store.operation")
	KeyMethod        = attribute.Key("http.request.method")
	KeyStatus        = attribute.Key("http.response.status_code")
	KeyHTTPRoute     = attribute.Key("http.route")
	KeyURLPath       = attribute.Key("url.path")
	KeyServerAddress = attribute.Key("server.address")
	KeyErrorType     = attribute.Key("error.type")
)

// Token lookup results.
const (
	ResultHit   = "hit"   // the cached token was usable
	ResultWait  = "wait"  // the caller waited for a fetch another caller started
	ResultFetch = "fetch" // the caller started the fetch it waited for
)

// Start opens a child span of the span in ctx when that span records, and
// otherwise returns ctx and its (non-recording) span unchanged, without
// allocating. End the returned span in every case. Passing attrs costs an
// allocation even when nothing records: a site on the request path checks
// Recording first, or sets them on the span afterwards.
func Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(Scope).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Recording returns the span in ctx when it records, or nil: the guard
// before building attributes that would allocate for nothing.
func Recording(ctx context.Context) trace.Span {
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		return sp
	}
	return nil
}

// Detach returns a context without ctx's values or cancellation that
// carries ctx's span when it records: work done on behalf of a caller on its
// own context (a shared token fetch) stays in the caller's trace.
func Detach(ctx context.Context) context.Context {
	if sp := trace.SpanFromContext(ctx); sp.IsRecording() {
		return trace.ContextWithSpan(context.Background(), sp)
	}
	return context.Background()
}

// SetResult records a token lookup's result on the span in ctx.
func SetResult(ctx context.Context, result string) {
	if sp := Recording(ctx); sp != nil {
		sp.SetAttributes(KeyTokenResult.String(result))
	}
}

// BudgetWait records, on the span in ctx, that a token request waited d for
// the authorization host's budget (or a back-off) before it was sent.
func BudgetWait(ctx context.Context, d time.Duration) {
	if sp := Recording(ctx); sp != nil {
		sp.AddEvent(EventBudgetWait, trace.WithAttributes(KeyWaitSeconds.Float64(d.Seconds())))
	}
}

// Fail marks sp as failed with a kind of error (a type name or a code,
// never the error's text, which can hold a URL or an answer's excerpt).
func Fail(sp trace.Span, kind string) {
	if sp.IsRecording() {
		sp.SetAttributes(KeyErrorType.String(kind))
		sp.SetStatus(codes.Error, kind)
	}
}

// Status records an HTTP answer's status code on sp; a 5xx marks it failed
// on a client span, as the semantic conventions say.
func Status(sp trace.Span, status int, client bool) {
	if !sp.IsRecording() {
		return
	}
	sp.SetAttributes(KeyStatus.Int(status))
	if status >= 500 || (client && status >= 400) {
		sp.SetStatus(codes.Error, "")
	}
}
