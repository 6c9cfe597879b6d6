// Package tracing runs the released tokenproxy binary with the OTEL_*
// environment against real OTLP receivers (OTLP/HTTP and OTLP/gRPC, in the
// test) and checks the spans a proxied request exports: their tree, the
// app's trace continued, and that none carries a token, a secret or a
// header value.
package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
	"github.com/tokenproxy/tokenproxy/testkit/vaulttest"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	errBuild  error
)

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the tokenproxy binary")
	}
	buildOnce.Do(func() {
		if binDir, errBuild = os.MkdirTemp("", "tokenproxy-tracing-"); errBuild != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binPath, errBuild = e2eenv.Build(ctx, binDir)
	})
	if errBuild != nil {
		t.Fatal(errBuild)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// receiver keeps every export it was sent, raw and decoded.
type receiver struct {
	mu    sync.Mutex
	raw   [][]byte
	spans []*tracepb.Span
}

func (r *receiver) add(raw []byte, req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.raw = append(r.raw, raw)
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
}

func (r *receiver) snapshot() ([]byte, []*tracepb.Span) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Join(r.raw, nil), append([]*tracepb.Span(nil), r.spans...)
}

// startHTTPReceiver serves POST /v1/traces (OTLP/HTTP, protobuf) and
// returns its endpoint.
func startHTTPReceiver(t *testing.T, r *receiver) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			http.Error(w, "not an OTLP traces export", http.StatusNotFound)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ex coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &ex); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.add(raw, &ex)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type grpcTraces struct {
	coltracepb.UnimplementedTraceServiceServer
	r *receiver
}

func (g grpcTraces) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	raw, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	g.r.add(raw, req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// startGRPCReceiver serves the OTLP TraceService over gRPC and returns its
// endpoint.
func startGRPCReceiver(t *testing.T, r *receiver) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcTraces{r: r})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String()
}

// setup is one tokenproxy process in front of a Banking Circle emulator,
// its route signed, with the OTEL_* environment given.
type setup struct {
	bank *e2eenv.Bank
	proc *e2eenv.Proc
	// secrets must appear in no export.
	secrets []string
}

type options struct {
	env         map[string]string
	propagation bool
	transit     bool // sign with a Vault Transit key instead of a local one
}

func start(t *testing.T, o options) *setup {
	t.Helper()
	bin := binary(t)
	for k, v := range o.env {
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	bank, err := e2eenv.StartBank(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bank.Close() })
	l, err := e2eenv.NewListeners()
	if err != nil {
		t.Fatal(err)
	}
	top := ""
	signing := ""
	if o.transit {
		srv := vaulttest.Start(t)
		transit, kv := transitKey(t, srv)
		t.Setenv("TP_TEST_VAULT_TOKEN", srv.Token)
		top = fmt.Sprintf("vault: {address: %s, auth: {method: token, token: {env: TP_TEST_VAULT_TOKEN}}}\n", srv.Addr)
		signing = fmt.Sprintf("signing: {profile: stet, key_id: tpp-key, key: {vault_transit: {key: {mount: %s, key: qseal}, certificate: {mount: %s, path: tpp/qseal, field: certificate}}}}", transit, kv)
	} else {
		cert, err := bank.CA.IssueClient("TPP QSealC", pki.WithKeyType(pki.RSA2048))
		if err != nil {
			t.Fatal(err)
		}
		f, err := pki.WriteFiles(dir, "qseal", cert, "x")
		if err != nil {
			t.Fatal(err)
		}
		signing = fmt.Sprintf("signing: {profile: stet, key_id: tpp-key, key: {pem: {cert_file: %s, key_file: %s}}}", f.Cert, f.Key)
	}
	route := []string{signing}
	if o.propagation {
		route = append(route, "trace_propagation: true")
	}
	// One token request a second at most: the request after the bank
	// revoked the token waits for the budget.
	yaml := bank.Config(l, e2eenv.ConfigOptions{RatePerMinute: 60, Burst: 1, Route: route, Top: top})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proc, err := e2eenv.Run(ctx, bin, dir, yaml, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proc.Kill)
	s := &setup{bank: bank, proc: proc}
	basic := base64.StdEncoding.EncodeToString([]byte(bank.Username + ":" + bank.Password))
	s.secrets = append(bank.Secrets(), basic)
	return s
}

// transitKey makes a non-exportable RSA key "qseal" in a new Transit mount
// and stores a certificate of its public key at tpp/qseal in a new KV mount.
func transitKey(t *testing.T, srv *vaulttest.Server) (transit, kv string) {
	t.Helper()
	transit, kv = vaulttest.Unique("transit"), vaulttest.Unique("kv")
	srv.Mount(transit, "transit")
	srv.Mount(kv, "kv-v2")
	srv.Write(transit+"/keys/qseal", map[string]any{"type": "rsa-2048", "exportable": false})
	pubPEM := srv.Read(transit + "/keys/qseal").Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string)
	blk, _ := pem.Decode([]byte(pubPEM))
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("QTSP test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.CertifyKey("TPP QSealC (Transit)", pub, pki.WithSerialNumber(big.NewInt(0x6AEB4444)),
		pki.WithSubject(pkix.Name{CommonName: "TPP QSealC (Transit)", Organization: []string{"TPP"}}))
	if err != nil {
		t.Fatal(err)
	}
	srv.PutKV(kv, "tpp/qseal", map[string]any{"certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))})
	return transit, kv
}

// appRequest is what the app sends: a trace context of its own, a query
// and a header whose values must not be recorded.
type appRequest struct {
	traceID, spanID string // hex
	query, header   string
}

func newAppRequest() appRequest {
	return appRequest{
		traceID: randHex(16), spanID: randHex(8),
		query: e2eenv.Random("code"), header: e2eenv.Random("app-secret"),
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (a appRequest) traceparent() string { return "00-" + a.traceID + "-" + a.spanID + "-01" }

// send makes one request through the route's local listener and returns the
// status.
func (s *setup) send(t *testing.T, a *appRequest) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+s.proc.L.Local+bankingcircle.AccountsPath+"?code="+a.query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Traceparent", a.traceparent())
	req.Header.Set("Tracestate", "app=opaque")
	req.Header.Set("X-App-Secret", a.header)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func attr(sp *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range sp.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func str(sp *tracepb.Span, key string) string { return attr(sp, key).GetStringValue() }

// tree is one trace's spans by id.
type tree struct {
	spans []*tracepb.Span
	byID  map[string]*tracepb.Span
}

func traceOf(spans []*tracepb.Span, traceID string) *tree {
	tr := &tree{byID: map[string]*tracepb.Span{}}
	for _, sp := range spans {
		if hex.EncodeToString(sp.GetTraceId()) == traceID {
			tr.spans = append(tr.spans, sp)
			tr.byID[hex.EncodeToString(sp.GetSpanId())] = sp
		}
	}
	sort.Slice(tr.spans, func(i, j int) bool { return tr.spans[i].GetStartTimeUnixNano() < tr.spans[j].GetStartTimeUnixNano() })
	return tr
}

func (tr *tree) children(parent *tracepb.Span, name string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, sp := range tr.spans {
		if bytes.Equal(sp.GetParentSpanId(), parent.GetSpanId()) && (name == "" || sp.GetName() == name) {
			out = append(out, sp)
		}
	}
	return out
}

// render draws the tree as text, one span a line, for the log and the docs.
func (tr *tree) render(root *tracepb.Span) string {
	var b strings.Builder
	var walk func(sp *tracepb.Span, depth int)
	walk = func(sp *tracepb.Span, depth int) {
		d := time.Duration(sp.GetEndTimeUnixNano() - sp.GetStartTimeUnixNano()) //nolint:gosec // a span's duration
		fmt.Fprintf(&b, "%s%s (%s, %v)", strings.Repeat("  ", depth), sp.GetName(), strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_"), d.Round(100*time.Microsecond))
		for _, kv := range sp.GetAttributes() {
			v := kv.GetValue()
			switch {
			case v.GetStringValue() != "":
				fmt.Fprintf(&b, " %s=%s", kv.GetKey(), v.GetStringValue())
			default:
				fmt.Fprintf(&b, " %s=%v", kv.GetKey(), strings.TrimSpace(strings.SplitN(v.String(), ":", 2)[1]))
			}
		}
		b.WriteString("\n")
		for _, ev := range sp.GetEvents() {
			fmt.Fprintf(&b, "%s  event %q", strings.Repeat("  ", depth), ev.GetName())
			for _, kv := range ev.GetAttributes() {
				fmt.Fprintf(&b, " %s=%v", kv.GetKey(), kv.GetValue().GetDoubleValue())
			}
			b.WriteString("\n")
		}
		for _, c := range tr.children(sp, "") {
			walk(c, depth+1)
		}
	}
	walk(root, 0)
	return b.String()
}

func one(t *testing.T, spans []*tracepb.Span, what string) *tracepb.Span {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%d spans %s, want 1", len(spans), what)
	}
	return spans[0]
}

// checkTrace runs the scenario (a request that fetches the token, then,
// after the bank revoked it, one with the app's trace context: a hit
// rejected upstream, a refetch that waits for the budget, a retry) and
// asserts the exported tree of the second.
func checkTrace(t *testing.T, s *setup, r *receiver, transit bool) {
	warm := newAppRequest()
	if st := s.send(t, &warm); st != http.StatusOK {
		t.Fatalf("first request: %d\n%s", st, s.proc.Logs())
	}
	s.bank.Emu.RevokeTokens()
	a := newAppRequest()
	if st := s.send(t, &a); st != http.StatusOK {
		t.Fatalf("request after the revocation: %d\n%s", st, s.proc.Logs())
	}
	if err := s.proc.Stop(); err != nil { // flushes the spans
		t.Fatalf("stopping tokenproxy: %v\n%s", err, s.proc.Logs())
	}
	raw, spans := r.snapshot()
	tr := traceOf(spans, a.traceID)
	if len(tr.spans) == 0 {
		t.Fatalf("no span of the app's trace %s among %d exported\n%s", a.traceID, len(spans), s.proc.Logs())
	}
	var roots []*tracepb.Span
	for _, sp := range tr.spans {
		if hex.EncodeToString(sp.GetParentSpanId()) == a.spanID {
			roots = append(roots, sp)
		}
	}
	root := one(t, roots, "continuing the app's span")
	t.Logf("span tree of the request:\n%s", tr.render(root))
	if root.GetName() != "tokenproxy bankingcircle" || root.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Fatalf("server span %q kind %v", root.GetName(), root.GetKind())
	}
	if got := str(root, "url.path"); got != bankingcircle.AccountsPath {
		t.Fatalf("url.path %q, want %q (no query)", got, bankingcircle.AccountsPath)
	}
	if got := attr(root, "http.response.status_code").GetIntValue(); got != 200 {
		t.Fatalf("server span status %d", got)
	}
	lookups := tr.children(root, "token lookup")
	ups := tr.children(root, "upstream")
	signs := tr.children(root, "sign")
	if len(lookups) != 2 || len(ups) != 2 || len(signs) != 2 {
		t.Fatalf("%d token lookups, %d upstream and %d sign spans under the server span, want 2 each", len(lookups), len(ups), len(signs))
	}
	if str(lookups[0], "tokenproxy.token.result") != "hit" || str(lookups[1], "tokenproxy.token.result") != "fetch" {
		t.Fatalf("lookup results %q then %q, want hit then fetch", str(lookups[0], "tokenproxy.token.result"), str(lookups[1], "tokenproxy.token.result"))
	}
	if got := []int64{attr(ups[0], "http.response.status_code").GetIntValue(), attr(ups[1], "http.response.status_code").GetIntValue()}; got[0] != 401 || got[1] != 200 {
		t.Fatalf("upstream statuses %v, want [401 200]", got)
	}
	if str(ups[1], "server.address") != "127.0.0.1" && str(ups[1], "server.address") != "localhost" {
		t.Fatalf("upstream server.address %q", str(ups[1], "server.address"))
	}
	var waited float64
	for _, ev := range lookups[1].GetEvents() {
		if ev.GetName() == "budget wait" {
			for _, kv := range ev.GetAttributes() {
				waited = kv.GetValue().GetDoubleValue()
			}
		}
	}
	if waited <= 0 {
		t.Fatalf("the refetch has no budget wait event (events %v)", lookups[1].GetEvents())
	}
	treq := one(t, tr.children(lookups[1], "token request"), "under the refetch")
	if str(treq, "tokenproxy.token.grant") != "basic_get" || attr(treq, "http.response.status_code").GetIntValue() != 200 || treq.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
		t.Fatalf("token request span: %v", treq.GetAttributes())
	}
	wantKey := "local"
	if transit {
		wantKey = "vault_transit"
	}
	for _, sg := range signs {
		if str(sg, "tokenproxy.signing.profile") != "stet" || str(sg, "tokenproxy.signing.key") != wantKey {
			t.Fatalf("sign span: %v", sg.GetAttributes())
		}
		vs := tr.children(sg, "vault transit sign")
		if transit && len(vs) != 1 || !transit && len(vs) != 0 {
			t.Fatalf("%d vault transit sign spans under a sign span (transit %v)", len(vs), transit)
		}
	}

	// Nothing secret in any export: the tokens issued, the credentials,
	// the Basic header, the app's header and query values.
	secrets := append(append([]string{}, s.secrets...), s.bank.Emu.IssuedTokens()...)
	secrets = append(secrets, a.query, a.header, warm.query, warm.header)
	if len(s.bank.Emu.IssuedTokens()) < 2 {
		t.Fatalf("%d tokens issued, want 2", len(s.bank.Emu.IssuedTokens()))
	}
	for _, sec := range secrets {
		if bytes.Contains(raw, []byte(sec)) {
			t.Fatalf("an export holds a secret or a header value (%.6s…)", sec)
		}
	}
	// The app's tracestate travels in the span context, as W3C means it
	// to, and in no attribute or event.
	for _, sp := range spans {
		kvs := sp.GetAttributes()
		for _, ev := range sp.GetEvents() {
			kvs = append(kvs, ev.GetAttributes()...)
		}
		for _, kv := range kvs {
			if v := kv.GetValue().GetStringValue(); strings.Contains(v, "Bearer") || strings.Contains(v, "Basic ") ||
				strings.Contains(v, a.traceID) || strings.Contains(v, "opaque") {
				t.Fatalf("span %q attribute %s holds a header value: %q", sp.GetName(), kv.GetKey(), v)
			}
		}
	}
}

func TestTracesOverHTTP(t *testing.T) {
	var r receiver
	ep := startHTTPReceiver(t, &r)
	s := start(t, options{env: map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_SAMPLER": "always_on",
	}})
	checkTrace(t, s, &r, false)
}

func TestTracesOverGRPC(t *testing.T) {
	var r receiver
	ep := startGRPCReceiver(t, &r)
	s := start(t, options{env: map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "tokenproxy-test",
	}})
	checkTrace(t, s, &r, false)
}

// With VAULT_ADDR set, the route signs with a Vault Transit key: the sign
// span has a "vault transit sign" child.
func TestTracesWithVaultTransit(t *testing.T) {
	if os.Getenv("VAULT_ADDR") == "" {
		t.Skip("needs VAULT_ADDR and VAULT_TOKEN (a Vault dev server)")
	}
	var r receiver
	ep := startHTTPReceiver(t, &r)
	s := start(t, options{transit: true, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep}})
	checkTrace(t, s, &r, true)
}

// The app's traceparent reaches the bank only on a route with
// trace_propagation, and then it is tokenproxy's upstream span, in the
// app's trace.
func TestTraceparentUpstream(t *testing.T) {
	for _, tc := range []struct {
		name        string
		propagation bool
		tracing     bool
	}{
		{"default_tracing_on", false, true},
		{"default_tracing_off", false, false},
		{"propagation_tracing_on", true, true},
		{"propagation_tracing_off", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r receiver
			env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_TRACES_EXPORTER": "none"}
			if tc.tracing {
				env = map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": startHTTPReceiver(t, &r), "OTEL_TRACES_EXPORTER": ""}
			}
			s := start(t, options{propagation: tc.propagation, env: env})
			a := newAppRequest()
			if st := s.send(t, &a); st != http.StatusOK {
				t.Fatalf("status %d\n%s", st, s.proc.Logs())
			}
			var got, state string
			for _, rc := range s.bank.Emu.Received() {
				if strings.HasPrefix(rc.RequestURI, bankingcircle.AccountsPath) {
					got, state = rc.Header.Get("Traceparent"), rc.Header.Get("Tracestate")
				}
			}
			if !tc.propagation {
				if got != "" || state != "" {
					t.Fatalf("the bank received traceparent %q tracestate %q; want neither by default", got, state)
				}
				return
			}
			if !strings.HasPrefix(got, "00-"+a.traceID+"-") || state != "app=opaque" {
				t.Fatalf("the bank received traceparent %q tracestate %q; want the app's trace %s and its state", got, state, a.traceID)
			}
			if !tc.tracing {
				if got != a.traceparent() {
					t.Fatalf("without tracing the bank received %q, want the app's %q", got, a.traceparent())
				}
				return
			}
			if err := s.proc.Stop(); err != nil {
				t.Fatal(err)
			}
			_, spans := r.snapshot()
			var found bool
			for _, sp := range traceOf(spans, a.traceID).spans {
				if hex.EncodeToString(sp.GetSpanId()) == strings.Split(got, "-")[2] {
					found = sp.GetName() == "upstream"
				}
			}
			if !found {
				t.Fatalf("the traceparent sent upstream (%s) names no exported upstream span", got)
			}
		})
	}
}
