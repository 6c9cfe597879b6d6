package cli

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestReadTracingEnv(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		on       bool
		protocol string
		err      string
	}{
		{"nothing set: off", nil, false, "", ""},
		{"endpoint: on, http/protobuf", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, "http/protobuf", ""},
		{"traces endpoint: on", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true, "http/protobuf", ""},
		{"exporter otlp without endpoint: on", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, "http/protobuf", ""},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, "grpc", ""},
		{"traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, true, "http/json", ""},
		{"exporter none wins over an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_TRACES_EXPORTER": "none"}, false, "", ""},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_SDK_DISABLED": "TRUE"}, false, "", ""},
		{"unknown exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "", `OTEL_TRACES_EXPORTER="zipkin"`},
		{"unknown protocol", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, false, "", `OTEL_EXPORTER_OTLP_PROTOCOL="thrift"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readTracingEnv(func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.On != tc.on || (tc.on && got.Protocol != tc.protocol) {
				t.Fatalf("got %+v, want on %v protocol %q", got, tc.on, tc.protocol)
			}
		})
	}
}

// Off by default: no provider, so the proxy opens no span at all.
func TestOpenTracingOffByDefault(t *testing.T) {
	tp, stop, err := openTracing(context.Background(), zap.NewNop(), func(string) string { return "" })
	if err != nil || tp != nil {
		t.Fatalf("provider %v, error %v; want none", tp, err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
