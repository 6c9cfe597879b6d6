package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/internal/version"
)

// tracingEnv is what the standard OTEL_* variables ask of traces.
type tracingEnv struct {
	// On is false unless an OTLP endpoint is set or OTEL_TRACES_EXPORTER
	// is otlp, and OTEL_SDK_DISABLED is not true: by default nothing is
	// traced and no exporter runs.
	On bool
	// Protocol is grpc, http/protobuf or http/json.
	Protocol string
}

// readTracingEnv reads the variables that decide whether and how traces are
// exported. The exporters read the others themselves (endpoint, headers,
// TLS, timeout, compression), and the SDK the sampler (OTEL_TRACES_SAMPLER,
// OTEL_TRACES_SAMPLER_ARG), the resource (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES) and the batching (OTEL_BSP_*).
func readTracingEnv(getenv func(string) string) (tracingEnv, error) {
	var e tracingEnv
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return e, nil
	}
	switch exp := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return e, nil
	case "otlp":
		e.On = true
	case "":
		e.On = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	default:
		return e, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: tokenproxy exports traces with otlp, or none", exp)
	}
	if !e.On {
		return e, nil
	}
	e.Protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if e.Protocol == "" {
		e.Protocol, name = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL")), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch e.Protocol {
	case "":
		e.Protocol = "http/protobuf"
	case "grpc", "http/protobuf", "http/json":
	default:
		return e, fmt.Errorf("%s=%q: use grpc, http/protobuf or http/json", name, e.Protocol)
	}
	return e, nil
}

// openTracing returns the tracer provider the OTEL_* environment asks for,
// and the function that flushes and stops it (call it once serving ended).
// When tracing is off it returns a nil provider, which traces nothing, and
// a no-op stop.
func openTracing(ctx context.Context, log *zap.Logger, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	nop := func(context.Context) error { return nil }
	env, err := readTracingEnv(getenv)
	if err != nil || !env.On {
		return nil, nop, err
	}
	var exp sdktrace.SpanExporter
	if env.Protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, nop, fmt.Errorf("starting the OTLP trace exporter (%s): %w", env.Protocol, err)
	}
	// service.name is tokenproxy unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES say otherwise (the later source wins).
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "tokenproxy"), attribute.String("service.version", version.String())),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nop, fmt.Errorf("reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The SDK reports export failures here; they are logged, never fatal.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: the trace exporter failed", zap.Error(err))
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("tracing on", zap.String("protocol", env.Protocol))
	return tp, tp.Shutdown, nil
}

// flushTracing exports the spans still buffered, for at most 5 s.
func flushTracing(log *zap.Logger, stop func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		log.Warn("tracing: spans lost at shutdown", zap.Error(err))
	}
}
