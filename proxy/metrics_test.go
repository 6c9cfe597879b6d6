package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// After a load of known size, /metrics shows matching counts and no secret.
func TestMetricsMatchLoad(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client()
	const n = 50
	for range n {
		if a := h.get(c, accountsURL); a.status != 200 {
			t.Fatalf("%d", a.status)
		}
	}
	for range 3 {
		h.get(c, "http://unrouted.example/")
	}
	h.emu.RevokeTokens()
	if a := h.get(c, accountsURL); a.status != 200 {
		t.Fatalf("%d", a.status)
	}
	resp, err := http.Get("http://" + h.srv.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, s := range append(h.emu.IssuedTokens(), bcPassword, bcPasscode, bcUser) {
		if strings.Contains(string(raw), s) {
			t.Fatal("a secret appears in /metrics")
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels map[string]string) float64 {
		f, ok := families[name]
		if !ok {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range f.Metric {
			for k, v := range labels {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	if v := value("tokenproxy_requests_total", map[string]string{"route": "bankingcircle", "status": "200", "error": ""}); v != n+1 {
		t.Fatalf("requests 200 = %v, want %d", v, n+1)
	}
	if v := value("tokenproxy_requests_total", map[string]string{"route": "", "status": "403", "error": "no_route"}); v != 3 {
		t.Fatalf("no_route = %v", v)
	}
	if v := value("tokenproxy_token_fetches_total", map[string]string{"route": "bankingcircle", "result": "ok"}); v != 2 {
		t.Fatalf("fetches = %v, want 2 (first request and after the 401)", v)
	}
	if v := value("tokenproxy_token_cache_hits_total", map[string]string{"route": "bankingcircle"}); v != n {
		t.Fatalf("hits = %v, want %d (49 hits + the request answered 401)", v, n)
	}
	// n+1 answered requests plus the one rejected with 401 and retried.
	if v := value("tokenproxy_upstream_duration_seconds", map[string]string{"route": "bankingcircle"}); v != n+1 {
		t.Fatalf("upstream histogram count = %v, want %d", v, n+1)
	}
	if v := value("tokenproxy_certificate_expiry_seconds", map[string]string{"route": "bankingcircle", "certificate": "client"}); v < 3600 {
		t.Fatalf("expiry = %v", v)
	}
}
