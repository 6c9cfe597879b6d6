package proxy

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
	"github.com/tokenproxy/tokenproxy/route"
	"github.com/tokenproxy/tokenproxy/tokencache"
)

// w3c reads and writes the W3C trace context (traceparent, tracestate).
var w3c = propagation.TraceContext{}

// startServerSpan opens the request's server span, continuing the app's
// traceparent, and returns req with the span in its context. Without a
// tracer it returns req and a non-recording span, allocating nothing. The
// span records the method, the path (never the query, which can carry
// secrets) and the route's name; no header value.
func (p *pipeline) startServerSpan(req *http.Request, rt *route.Route) (*http.Request, trace.Span) {
	if p.tracer == nil {
		return req, trace.SpanFromContext(req.Context())
	}
	name, routeName := "tokenproxy", ""
	if rt != nil {
		name, routeName = "tokenproxy "+rt.Name, rt.Name
	}
	ctx := w3c.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
	ctx, sp := p.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		tracing.KeyMethod.String(req.Method),
		tracing.KeyURLPath.String(req.URL.Path),
		tracing.KeyRoute.String(routeName),
	))
	return req.WithContext(ctx), sp
}

// endServerSpan ends the request's span (nil when none was opened) with
// the status given to the app and tokenproxy's error code, if any.
func endServerSpan(sp trace.Span, status int, code string) {
	if sp == nil || !sp.IsRecording() {
		return
	}
	tracing.Status(sp, status, false)
	if code != "" {
		tracing.Fail(sp, code)
	}
	sp.End()
}

// getToken is rt.Tokens.Get in a "token lookup" span: the cache records
// whether the token was a hit, waited for another caller's fetch or fetched,
// and any wait for the budget.
func getToken(ctx context.Context, rt *route.Route, key string) (*tokencache.Token, tokencache.Outcome, error) {
	ctx, sp := tracing.Start(ctx, tracing.SpanTokenLookup, trace.SpanKindInternal)
	tok, out, err := rt.Tokens.Get(ctx, key)
	if err != nil {
		tracing.Fail(sp, routeTokenError(rt, err).Code)
	}
	sp.End()
	return tok, out, err
}

// roundTrip sends out over the route's transport in an "upstream" client
// span. On a route with trace_propagation the span's context goes upstream
// as traceparent (set after signing, so no signature covers it).
func roundTrip(rt *route.Route, out *http.Request) (*http.Response, error) {
	ctx, sp := tracing.Start(out.Context(), tracing.SpanUpstream, trace.SpanKindClient)
	if sp.IsRecording() {
		sp.SetAttributes(tracing.KeyMethod.String(out.Method), tracing.KeyServerAddress.String(out.URL.Hostname()))
	}
	if rt.TracePropagation {
		w3c.Inject(ctx, propagation.HeaderCarrier(out.Header))
	}
	resp, err := rt.Transport.RoundTrip(out)
	if err != nil {
		tracing.Fail(sp, "transport")
	} else {
		tracing.Status(sp, resp.StatusCode, true)
	}
	sp.End()
	return resp, err
}
