package route

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// scriptConn returns its reads one script entry at a time.
type scriptConn struct {
	net.Conn
	reads []string
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.reads) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.reads[0])
	c.reads[0] = c.reads[0][n:]
	if c.reads[0] == "" {
		c.reads = c.reads[1:]
	}
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) { return len(p), nil }

// A response is read through upstreamConn however its bytes are split; one
// whose header block names both Content-Length and Transfer-Encoding gets
// the mark and Connection: close, any other is left as it is.
func TestUpstreamConnMarksAmbiguousFraming(t *testing.T) {
	const both = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	tests := []struct {
		name      string
		reads     []string
		ambiguous bool
		body      string
	}{
		{"content-length only", []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, false, "abc"},
		{"chunked only", []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"}, false, "abc"},
		{"both, one read", []string{both}, true, "abc"},
		{"both, bare LF", []string{"HTTP/1.1 200 OK\ntransfer-encoding: chunked\nCONTENT-LENGTH: 5\n\n3\r\nabc\r\n0\r\n\r\n"}, true, "abc"},
		{"both, the empty line alone", []string{both[:64], both[64:]}, true, "abc"},
		{"both, split inside the empty line", []string{both[:65], both[65:]}, true, "abc"},
		{"both, byte by byte", strings.Split(both, ""), true, "abc"},
		{"both in a 103, not in the answer", []string{"HTTP/1.1 103 Early Hints\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"}, false, "abc"},
		{"both after a 100", []string{"HTTP/1.1 100 Continue\r\n\r\n" + both}, true, "abc"},
		{"a body that looks like a header block", []string{"HTTP/1.1 200 OK\r\nContent-Length: 57\r\n\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n01234567"}, false,
			"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n01234567"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newUpstreamConn(&scriptConn{reads: append([]string(nil), tc.reads...)})
			br := bufio.NewReaderSize(c, 16)
			resp, err := http.ReadResponse(br, nil)   //nolint:bodyclose // read to its end below
			for err == nil && resp.StatusCode < 200 { // as the transport skips 1xx
				resp, err = http.ReadResponse(br, nil) //nolint:bodyclose // read to its end below
			}
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil || string(body) != tc.body {
				t.Fatalf("body %q, %v; want %q", body, err, tc.body)
			}
			if got := TakeAmbiguousFraming(resp.Header); got != tc.ambiguous {
				t.Fatalf("ambiguous = %v; want %v (header %v)", got, tc.ambiguous, resp.Header)
			}
			if resp.Close != tc.ambiguous {
				t.Fatalf("Close = %v; want %v", resp.Close, tc.ambiguous)
			}
			if TakeAmbiguousFraming(resp.Header) {
				t.Fatal("the mark was not removed")
			}
		})
	}
}

// A request written re-arms the scanner for the next response on the
// connection.
func TestUpstreamConnScansEachResponse(t *testing.T) {
	const both = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	sc := &scriptConn{reads: []string{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", both}}
	c := newUpstreamConn(sc)
	br := bufio.NewReader(c)
	for i, want := range []bool{false, true} {
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, err := http.ReadResponse(br, nil) //nolint:bodyclose // read to its end below
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		if got := TakeAmbiguousFraming(resp.Header); got != want {
			t.Fatalf("response %d: ambiguous = %v; want %v", i, got, want)
		}
	}
}

// The mark's name is not one an upstream can know.
func TestAmbiguousHeaderIsRandom(t *testing.T) {
	if !strings.HasPrefix(ambiguousHeader, "X-Tokenproxy-Framing-") || len(ambiguousHeader) != len("X-Tokenproxy-Framing-")+16 {
		t.Fatalf("mark %q", ambiguousHeader)
	}
	if TakeAmbiguousFraming(http.Header{"X-Tokenproxy-Framing": {"1"}}) {
		t.Fatal("a fixed header name was taken for the mark")
	}
}

func TestStartsRequest(t *testing.T) {
	for in, want := range map[string]bool{
		"GET /v1/accounts HTTP/1.1\r\nHost: x\r\n": true,
		"POST / HTTP/1.1\r\n":                      true,
		"GET / HTTP/1.1":                           false, // no line end yet: never how the transport writes
		`{"amount":"12.30"}`:                       false,
		" / HTTP/1.1\r\n":                          false,
		"0\r\n\r\n":                                false,
		"a\nb HTTP/1.1 c\n":                        false, // a line end before the first space
	} {
		if got := startsRequest([]byte(in)); got != want {
			t.Errorf("startsRequest(%q) = %v; want %v", in, got, want)
		}
	}
}

// loopConn answers every read with one whole response, as one TLS record
// brings a small answer.
type loopConn struct {
	net.Conn
	resp []byte
}

func (c *loopConn) Read(p []byte) (int, error)  { return copy(p, c.resp), nil }
func (c *loopConn) Write(p []byte) (int, error) { return len(p), nil }

// The scanner's cost per response of a typical size (a 1.5 KB JSON answer),
// against the bare connection.
func BenchmarkUpstreamConnResponse(b *testing.B) {
	resp := []byte("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 07 Dec 2026 10:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 1500\r\nConnection: keep-alive\r\n\r\n" + strings.Repeat("x", 1500))
	req := []byte("GET /api/v1/accounts HTTP/1.1\r\nHost: api.bench.test\r\nAuthorization: Bearer t\r\n\r\n")
	for _, tc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"bare", func(c net.Conn) net.Conn { return c }},
		{"scanned", func(c net.Conn) net.Conn { return newUpstreamConn(c) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := tc.wrap(&loopConn{resp: resp})
			buf := make([]byte, 4096)
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Write(req)
				if n, _ := c.Read(buf); n != len(resp) {
					b.Fatalf("read %d", n)
				}
			}
		})
	}
}
