package consentstore

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/tokenproxy/tokenproxy/internal/tracing"
)

// Store operations named in traces.
const (
	opGet    = "get"
	opPut    = "put"
	opDelete = "delete"
)

var opSpans = map[string]string{opGet: "consent store get", opPut: "consent store put", opDelete: "consent store delete"}

// startOp opens the span of one store operation under a recording span in
// ctx: the store's kind and the operation, never a key or a record.
func startOp(ctx context.Context, kind, op string) (context.Context, trace.Span) {
	if tracing.Recording(ctx) == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return tracing.Start(ctx, opSpans[op], trace.SpanKindInternal,
		tracing.KeyStoreKind.String(kind), tracing.KeyStoreOp.String(op))
}
