package intercept

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// counter returns the value of the counter name whose only label has value label.
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestPrometheusObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	obs := NewPrometheusObserver(reg)
	l := NewLeaves(mustGenerate(t, GenerateConfig{}), LeafConfig{Observer: obs})
	allow := allowOnly("bank.example")
	for range 3 {
		if _, err := l.Certificate(context.Background(), "bank.example", allow); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = l.Certificate(context.Background(), "other.example", allow)
	tun, err := l.Open("bank.example:443", allow)
	if err != nil {
		t.Fatal(err)
	}
	if err := tun.checkSNI("other.example"); err == nil {
		t.Fatal("SNI mismatch accepted")
	}
	tests := []struct {
		name, label string
		want        float64
	}{
		{"tokenproxy_interception_certificates_issued_total", "bank.example", 1},
		{"tokenproxy_interception_certificate_cache_hits_total", "bank.example", 2},
		{"tokenproxy_interception_refusals_total", string(ReasonNotIntercepted), 1},
		{"tokenproxy_interception_refusals_total", string(ReasonSNIMismatch), 0}, // checkSNI alone does not count
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+tc.label, func(t *testing.T) {
			if got := counter(t, reg, tc.name, tc.label); got != tc.want {
				t.Fatalf("%s{%s} = %v, want %v", tc.name, tc.label, got, tc.want)
			}
		})
	}
}
