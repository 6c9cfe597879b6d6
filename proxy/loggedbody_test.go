package proxy

import (
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

// writeResponse, the one writer of both entry points, copies all of the
// body, counts its bytes in the log line, flushes a streamed body and passes
// the upstream's trailers on.
func TestWriteResponse(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 5000) // more than one pooled buffer
	for _, tc := range []struct {
		name          string
		contentLength int64
		trailer       http.Header
		wantFlush     bool
	}{
		{name: "sized", contentLength: int64(len(body))},
		{name: "streamed", contentLength: -1, wantFlush: true},
		{name: "trailers", contentLength: -1, trailer: http.Header{"Checksum": {"abc"}}, wantFlush: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			lb := testLoggedBody(zap.New(core), body)
			lb.resp.ContentLength = tc.contentLength
			lb.resp.Trailer = tc.trailer
			lb.resp.Body = lb
			rec := httptest.NewRecorder()
			writeResponse(rec, lb.resp)
			res := rec.Result()
			if got := rec.Body.String(); got != body {
				t.Fatalf("wrote %d bytes; want %d", len(got), len(body))
			}
			if rec.Flushed != tc.wantFlush {
				t.Fatalf("flushed %v; want %v", rec.Flushed, tc.wantFlush)
			}
			for k, v := range tc.trailer {
				if got := res.Trailer.Get(k); got != v[0] {
					t.Fatalf("trailer %s = %q; want %q", k, got, v[0])
				}
			}
			lines := logs.FilterMessage("request").All()
			if len(lines) != 1 {
				t.Fatalf("%d request lines; want 1", len(lines))
			}
			if got := lines[0].ContextMap()["bytes"]; got != int64(len(body)) {
				t.Fatalf("logged bytes %v; want %d", got, len(body))
			}
		})
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
