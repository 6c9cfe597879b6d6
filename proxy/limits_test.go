package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFramingScan(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"content-length only", []string{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"}, false},
		{"chunked only", []string{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"}, false},
		{"both", []string{"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"}, true},
		{"both, mixed case, bare LF", []string{"POST / HTTP/1.1\ntransfer-ENCODING: chunked\nCONTENT-length: 3\n\n"}, true},
		{"both, split across reads", []string{"POST / HTTP/1.1\r\nContent-Len", "gth: 3\r\nTransfer-Enc", "oding: chunked\r", "\n\r\n"}, true},
		{"in two different requests", []string{"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"}, false},
		{"blank before the colon", []string{"POST / HTTP/1.1\r\nContent-Length : 3\r\nTransfer-Encoding: chunked\r\n\r\n"}, true},
		{"a longer field name", []string{"POST / HTTP/1.1\r\nContent-Lengthy: 3\r\nTransfer-Encoding: chunked\r\n\r\n"}, false},
		{"block not finished yet", []string{"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &framingConn{}
			for _, ch := range tc.chunks {
				c.scan([]byte(ch))
			}
			if got := c.ambiguous.Load(); got != tc.want {
				t.Fatalf("ambiguous = %v, want %v", got, tc.want)
			}
		})
	}
}

// hardened serves h on a loopback listener wrapped by hardenConns.
func hardened(t *testing.T, h http.Handler, gateway bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	ln = hardenConns(srv, ln, gateway)
	go srv.Serve(ln) //nolint:errcheck // ends when closed
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestAmbiguousFramingClosesConnection(t *testing.T) {
	var served atomic.Int32
	addr := hardened(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}), false)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !resp.Close {
		t.Fatalf("answer to a Content-Length + Transfer-Encoding request lacks Connection: close: %v", resp.Header)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the answer: %q, %v; want the connection closed", rest, err)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("handler ran %d times; the pipelined request must not be served", n)
	}
}

func TestWriteStallTimeout(t *testing.T) {
	old := writeStallTimeout
	writeStallTimeout = 200 * time.Millisecond
	t.Cleanup(func() { writeStallTimeout = old })
	done := make(chan error, 1)
	addr := hardened(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 1 << 14 { // 1 GiB at most: far more than socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}), false)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client never reads.
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("1 GiB written to a client that reads nothing")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler is still blocked writing to a client that stopped reading")
	}
}

func TestGatewayConnectionCap(t *testing.T) {
	old := gatewayMaxConns
	gatewayMaxConns = 2
	t.Cleanup(func() { gatewayMaxConns = old })
	release := make(chan struct{}, 3)
	var inFlight, released atomic.Int32
	seenReleased := make(chan int32, 3)
	addr := hardened(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		seenReleased <- released.Load()
		inFlight.Add(1)
		<-release
		_, _ = io.WriteString(w, "ok")
	}), true)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	results := make(chan error, 3)
	get := func() {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
		results <- err
	}
	go get()
	go get()
	for range 2 {
		if r := <-seenReleased; r != 0 {
			t.Fatalf("one of the first two requests entered after a release")
		}
	}
	// The third connection completes its TCP handshake (the kernel's accept
	// queue) but is not accepted while two are open: it enters only after a
	// release, whatever the scheduling.
	go get()
	time.Sleep(300 * time.Millisecond) // room for a missing cap to show
	released.Add(1)
	release <- struct{}{}
	if r := <-seenReleased; r < 1 {
		t.Fatalf("a third connection was served while two held the cap of 2")
	}
	release <- struct{}{}
	release <- struct{}{}
	for range 3 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

func TestHeaderTooLargeAnswered(t *testing.T) {
	addr := hardened(t, http.NotFoundHandler(), false)
	for _, n := range []int{70 << 10, 1 << 20} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		payload := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", n/1000) + "\r\n"
		go io.WriteString(c, payload) //nolint:errcheck // the server stops reading
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			t.Fatalf("%d header bytes: %v", n, err)
		}
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d header bytes: %s, want 431", n, resp.Status)
		}
	}
}
