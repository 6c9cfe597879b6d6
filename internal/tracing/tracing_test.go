package tracing

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// With no recording span in the context (tracing off, or a request not
// sampled), the helpers on the request path allocate nothing.
func TestOffAllocatesNothing(t *testing.T) {
	ctx := context.Background()
	sampledOut := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}}))
	for _, c := range []context.Context{ctx, sampledOut} {
		n := testing.AllocsPerRun(100, func() {
			c2, sp := Start(c, SpanTokenLookup, trace.SpanKindInternal)
			SetResult(c2, ResultHit)
			BudgetWait(c2, time.Second)
			Status(sp, 200, true)
			Fail(sp, "x")
			_ = Detach(c2)
			sp.End()
		})
		if n != 0 {
			t.Fatalf("%v allocations per request with tracing off, want 0", n)
		}
	}
}
