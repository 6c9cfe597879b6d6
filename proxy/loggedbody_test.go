package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func testLoggedBody(log *zap.Logger, body string) *loggedBody {
	req := httptest.NewRequest(http.MethodGet, "http://api.example/v1/accounts", nil)
	resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}}
	return &loggedBody{ReadCloser: io.NopCloser(strings.NewReader(body)), p: &pipeline{log: log},
		req: req, resp: resp, host: "api.example", ex: exchange{route: "r", token: "hit"}, start: timeNow()}
}

// onlyWriter hides bytes.Buffer's ReadFrom, as a ResponseWriter wrapper would.
type onlyWriter struct{ io.Writer }

// io.Copy (goproxy's copy of a response) goes through WriteTo: all of the
// body arrives, and the log line counts its bytes.
func TestLoggedBodyWriteTo(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	body := strings.Repeat("0123456789abcdef", 5000) // more than one pooled buffer
	lb := testLoggedBody(zap.New(core), body)
	var out bytes.Buffer
	n, err := io.Copy(onlyWriter{&out}, lb)
	if err != nil || n != int64(len(body)) || out.String() != body {
		t.Fatalf("copied %d bytes, err %v; want %d", n, err, len(body))
	}
	lb.Close()
	lines := logs.FilterMessage("request").All()
	if len(lines) != 1 {
		t.Fatalf("%d request lines; want 1", len(lines))
	}
	if got := lines[0].ContextMap()["bytes"]; got != int64(len(body)) {
		t.Fatalf("logged bytes %v; want %d", got, len(body))
	}
}

// With the request line's level disabled, closing the body builds nothing.
func TestLoggedBodyCloseDisabledLevelDoesNotAllocate(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	lb := testLoggedBody(zap.New(core), "")
	allocs := testing.AllocsPerRun(100, func() {
		lb.done = false
		lb.Close()
	})
	if allocs != 0 {
		t.Fatalf("Close allocates %v times with info disabled", allocs)
	}
	if logs.Len() != 0 {
		t.Fatalf("%d lines logged at warn level", logs.Len())
	}
}
