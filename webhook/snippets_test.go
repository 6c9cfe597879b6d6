package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/oauth/consentstore"
	"github.com/tokenproxy/tokenproxy/webhook"
)

// snippet is the first fenced block of lang in docs/webhooks.md's
// section on verifying a delivery.
func snippet(t *testing.T, lang string) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	s = s[strings.Index(s, "## Verifying a delivery"):]
	i := strings.Index(s, "```"+lang+"\n")
	if i < 0 {
		t.Fatalf("docs/webhooks.md has no %s snippet", lang)
	}
	s = s[i+len("```"+lang+"\n"):]
	return s[:strings.Index(s, "```")]
}

func python(t *testing.T) string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("no python3")
	return ""
}

// TestVerifySnippets captures a real signed delivery from a dispatcher and
// verifies it with independent implementations: a python3 hmac one-liner
// and the Go, Python and Node snippets of docs/webhooks.md, each run as
// its own program; a tampered body fails all of them.
func TestVerifySnippets(t *testing.T) {
	type delivery struct {
		header string
		body   []byte
	}
	got := make(chan delivery, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case got <- delivery{r.Header.Get(webhook.HeaderSignature), b}:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	s := stores(t, "bolt", 1)[0]
	produce(t, consentstore.OutboxOf(s), 0, 1)
	d, err := webhook.New(webhook.Config{Outbox: consentstore.OutboxOf(s), Hooks: []webhook.Hook{hook(srv.URL)}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.Step(context.Background()); err != nil || n != 1 {
		t.Fatalf("step: %d, %v", n, err)
	}
	dl := <-got
	t.Logf("Tokenproxy-Signature: %.14s… body: %s", dl.header, dl.body)

	// An independent HMAC: python3's hmac module, no code of ours.
	ts, v1, _ := strings.Cut(strings.TrimPrefix(dl.header, "t="), ",v1=")
	oneLiner := exec.Command(python(t), "-c", `import hmac,hashlib,sys,os; print(hmac.new(os.environb[b"K"], os.environb[b"T"] + b"." + sys.stdin.buffer.read(), hashlib.sha256).hexdigest())`)
	oneLiner.Env = append(os.Environ(), "K="+testSecret, "T="+ts)
	oneLiner.Stdin = bytes.NewReader(dl.body)
	out, err := oneLiner.Output()
	if err != nil || strings.TrimSpace(string(out)) != v1 {
		t.Fatalf("python3 hmac: %q, %v; the header's v1 is %s", out, err, v1)
	}

	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goFile := write("verify.go", snippet(t, "go"))
	goBin := filepath.Join(dir, "verify")
	build := exec.Command("go", "build", "-o", goBin, goFile)
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=", "GO111MODULE=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the Go snippet: %v\n%s", err, out)
	}
	progs := map[string][]string{
		"go":     {goBin},
		"python": {python(t), write("verify.py", snippet(t, "python"))},
		"node":   {"node", write("verify.js", snippet(t, "js"))},
	}
	tampered := bytes.Replace(dl.body, []byte(`"owner":"app"`), []byte(`"owner":"app-x"`), 1)
	for name, argv := range progs {
		if _, err := exec.LookPath(argv[0]); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, tc := range []struct {
			body []byte
			want string
		}{{dl.body, "ok"}, {tampered, "invalid"}} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+testSecret, "TOKENPROXY_SIGNATURE="+dl.header)
			cmd.Stdin = bytes.NewReader(tc.body)
			out, _ := cmd.CombinedOutput()
			if strings.TrimSpace(string(out)) != tc.want {
				t.Errorf("%s snippet on the %s body: %q", name, map[string]string{"ok": "delivered", "invalid": "tampered"}[tc.want], out)
			}
		}
	}
	// Verify, the package's own, agrees, and refuses a stale timestamp.
	if err := webhook.Verify([]byte(testSecret), dl.header, dl.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := webhook.Verify([]byte(testSecret), dl.header, dl.body, time.Now().Add(time.Hour), 5*time.Minute); !errors.Is(err, webhook.ErrStale) {
		t.Fatalf("an hour later: %v", err)
	}
}

// TestSchemaMatchesEvents: docs/webhooks.schema.json names exactly the
// fields of consentstore.Event, the event types and the causes, and a
// real delivery's body keeps to it.
func TestSchemaMatchesEvents(t *testing.T) {
	raw, err := os.ReadFile("../docs/webhooks.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Required   []string `json:"required"`
		Properties map[string]struct {
			Enum []string `json:"enum"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	full := consentstore.Event{ID: "evt_x", Type: consentstore.EventInvalid, Created: time.Now(), Route: "r", Subject: "s",
		Cause: consentstore.CauseExpired, RefreshExpiry: time.Now()}
	b, _ := full.Body()
	var fields map[string]any
	_ = json.Unmarshal(b, &fields)
	for k := range fields {
		if _, ok := schema.Properties[k]; !ok {
			t.Errorf("the schema lacks the field %q", k)
		}
	}
	if len(fields) != len(schema.Properties) {
		t.Errorf("the schema has %d properties, an event %d fields", len(schema.Properties), len(fields))
	}
	var types []string
	for _, ty := range consentstore.EventTypes {
		types = append(types, string(ty))
	}
	if !slices.Equal(schema.Properties["type"].Enum, types) {
		t.Errorf("schema types %v, want %v", schema.Properties["type"].Enum, types)
	}
	causes := []string{consentstore.CauseInvalidGrant, consentstore.CauseExpired, consentstore.CauseRevoked}
	if !slices.Equal(schema.Properties["cause"].Enum, causes) {
		t.Errorf("schema causes %v, want %v", schema.Properties["cause"].Enum, causes)
	}
	// An event without the optional fields has every required one.
	b, _ = (&consentstore.Event{ID: "evt_x", Type: consentstore.EventActive, Created: time.Now(), Route: "r", Subject: "s"}).Body()
	fields = nil
	_ = json.Unmarshal(b, &fields)
	for _, k := range schema.Required {
		if _, ok := fields[k]; !ok {
			t.Errorf("a minimal event lacks the required field %q", k)
		}
	}
	if len(fields) != len(schema.Required) {
		t.Errorf("a minimal event has %d fields, the schema requires %d", len(fields), len(schema.Required))
	}
}
