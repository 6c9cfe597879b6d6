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

// chunkReader returns its chunks one read at a time (a chunk larger than
// the read in several); the last read returns
// end, with its data when withData is set.
type chunkReader struct {
	chunks   []string
	end      error
	withData bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, r.end
	}
	n := copy(p, r.chunks[0])
	if r.chunks[0] = r.chunks[0][n:]; r.chunks[0] != "" {
		return n, nil
	}
	r.chunks = r.chunks[1:]
	if len(r.chunks) == 0 && r.withData {
		return n, r.end
	}
	return n, nil
}

// flushCounter is a recorder that counts flushes.
type flushCounter struct {
	*httptest.ResponseRecorder
	flushes int
}

func (f *flushCounter) Flush() { f.flushes++; f.ResponseRecorder.Flush() }

// writeResponse, the one writer of every entry point, copies all of the
// body, counts its bytes in the log line, passes the upstream's trailers on
// and flushes every read that did not end the body, whatever the framing:
// an answer read whole costs no flush.
func TestWriteResponse(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 5000) // more than one pooled buffer
	for _, tc := range []struct {
		name          string
		chunks        []string
		eofWithData   bool
		contentLength int64
		trailer       http.Header
		wantFlushes   int
	}{
		{name: "sized, read whole", chunks: []string{body}, eofWithData: true, contentLength: int64(len(body)), wantFlushes: 2}, // two reads of 32 KiB flushed, the last not
		{name: "small, read whole", chunks: []string{"{}"}, eofWithData: true, contentLength: 2},
		{name: "sized, trickled", chunks: []string{body[:10], body[10:]}, eofWithData: true, contentLength: int64(len(body)), wantFlushes: 3},
		{name: "streamed", chunks: []string{body[:10], body[10:]}, contentLength: -1, wantFlushes: 4},
		{name: "trailers", chunks: []string{body}, contentLength: -1, trailer: http.Header{"Checksum": {"abc"}}, wantFlushes: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			lb := testLoggedBody(zap.New(core), "")
			lb.ReadCloser = io.NopCloser(&chunkReader{chunks: append([]string(nil), tc.chunks...), end: io.EOF, withData: tc.eofWithData})
			lb.resp.ContentLength = tc.contentLength
			lb.resp.Trailer = tc.trailer
			lb.resp.Body = lb
			rec := &flushCounter{ResponseRecorder: httptest.NewRecorder()}
			writeResponse(rec, lb.resp)
			res := rec.Result()
			if got := rec.Body.String(); got != strings.Join(tc.chunks, "") {
				t.Fatalf("wrote %d bytes; want %d", len(got), len(strings.Join(tc.chunks, "")))
			}
			if rec.flushes != tc.wantFlushes {
				t.Fatalf("flushed %d times; want %d", rec.flushes, tc.wantFlushes)
			}
			for k, v := range tc.trailer {
				if got := res.Trailer.Get(k); got != v[0] {
					t.Fatalf("trailer %s = %q; want %q", k, got, v[0])
				}
			}
			lines := logs.FilterMessage("request").All()
			if len(lines) != 1 || lines[0].Level != zapcore.InfoLevel {
				t.Fatalf("request lines %v; want 1 at info", lines)
			}
			if got := lines[0].ContextMap()["bytes"]; got != int64(len(strings.Join(tc.chunks, ""))) {
				t.Fatalf("logged bytes %v", got)
			}
		})
	}
}

// A body that fails before its end aborts the handler (net/http then drops
// the app's connection without a clean end) after the status and headers
// and what was read were sent, and is logged as a warning of its own.
func TestWriteResponseAbortsBrokenBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
	}{
		{"cut", []string{`{"transactions":[`}},
		{"nothing read", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.InfoLevel)
			lb := testLoggedBody(zap.New(core), "")
			lb.ReadCloser = io.NopCloser(&chunkReader{chunks: append([]string(nil), tc.chunks...), end: io.ErrUnexpectedEOF})
			lb.resp.ContentLength = -1
			lb.resp.Header.Set("X-Upstream", "1")
			lb.resp.Body = lb
			rec := httptest.NewRecorder()
			func() {
				defer func() {
					if r := recover(); r != http.ErrAbortHandler { //nolint:errorlint // net/http panics with the value itself
						t.Fatalf("recovered %v; want http.ErrAbortHandler", r)
					}
				}()
				writeResponse(rec, lb.resp)
			}()
			if !rec.Flushed || rec.Header().Get("X-Upstream") != "1" || rec.Body.String() != strings.Join(tc.chunks, "") {
				t.Fatalf("flushed %v, header %v, body %q", rec.Flushed, rec.Header(), rec.Body)
			}
			lines := logs.FilterMessage("request").All()
			if len(lines) != 1 || lines[0].Level != zapcore.WarnLevel || lines[0].ContextMap()["error"] != CodeUpstreamBodyBroken {
				t.Fatalf("request lines %v; want one warning with error %s", lines, CodeUpstreamBodyBroken)
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
