package e2e

import (
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
)

const bcHost = "sandbox.bankingcircleconnect.com"

// fwd is a forward-proxy request line and Host for path on the route's host.
func fwd(method, path, proto string) string {
	return method + " http://" + bcHost + path + " " + proto + "\r\nHost: " + bcHost + "\r\n"
}

type hostileCase struct {
	name    string
	local   bool   // send to the route's local port instead of the forward proxy
	payload string // raw bytes
	wait    time.Duration
	// Expectations.
	statuses []int  // answers in order
	code     string // tokenproxy's X-Tokenproxy-Error on the first answer, "" for none
	closed   bool   // the server must close the connection after the answers
	bankSaw  int    // requests the bank received
	// bank, when set, checks what the bank received further.
	bank func(t *testing.T, got []bankingcircle.Received)
}

func hostileCases() []hostileCase {
	accounts := "/api/v1/accounts?PageNumber=1&PageSize=1"
	get := fwd("GET", accounts, "HTTP/1.1")
	return []hostileCase{
		{name: "Content-Length and Transfer-Encoding, then a pipelined request",
			payload:  fwd("POST", accounts, "HTTP/1.1") + "Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get + "\r\n",
			statuses: []int{405}, closed: true, bankSaw: 1},
		{name: "Content-Length and Transfer-Encoding on a local port", local: true,
			payload: "POST " + accounts + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n5\r\nhello\r\n0\r\n\r\n" +
				"GET " + accounts + " HTTP/1.1\r\nHost: x\r\n\r\n",
			statuses: []int{405}, closed: true, bankSaw: 1, bank: func(t *testing.T, got []bankingcircle.Received) {
				if string(got[0].Body) != "hello" || got[0].ContentLength != 5 {
					t.Errorf("bank saw body %q (Content-Length %d), want the 5 chunked bytes", got[0].Body, got[0].ContentLength)
				}
			}},
		{name: "Transfer-Encoding other than chunked",
			payload:  fwd("POST", accounts, "HTTP/1.1") + "Transfer-Encoding: gzip\r\n\r\n",
			statuses: []int{501}, closed: true},
		{name: "two differing Content-Lengths",
			payload:  fwd("POST", accounts, "HTTP/1.1") + "Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
			statuses: []int{400}, closed: true},
		// RFC 9112 section 5.2: a proxy either rejects obs-fold or replaces it
		// with a space before forwarding; net/http does the latter.
		{name: "obsolete line folding",
			payload:  get + "X-Note: one\r\n  two\r\n\r\n",
			statuses: []int{200}, bankSaw: 1, bank: func(t *testing.T, got []bankingcircle.Received) {
				if v := got[0].Header.Values("X-Note"); len(v) != 1 || v[0] != "one two" {
					t.Errorf("bank saw X-Note %q, want the unfolded \"one two\"", v)
				}
			}},
		{name: "huge header block (1 MiB)",
			payload:  get + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 1024) + "\r\n",
			statuses: []int{431}, closed: true},
		{name: "HTTP/1.0 without Host, absolute URI",
			payload:  "GET http://" + bcHost + accounts + " HTTP/1.0\r\n\r\n",
			statuses: []int{200}, closed: true, bankSaw: 1},
		{name: "HTTP/1.0 without Host, origin form, forward proxy",
			payload:  "GET " + accounts + " HTTP/1.0\r\n\r\n",
			statuses: []int{400}, code: "not_a_proxy_request", closed: true},
		{name: "HTTP/1.0 without Host, local port", local: true,
			payload:  "GET " + accounts + " HTTP/1.0\r\n\r\n",
			statuses: []int{200}, closed: true, bankSaw: 1},
		{name: "HTTP/1.1 without Host",
			payload:  "GET http://" + bcHost + accounts + " HTTP/1.1\r\n\r\n",
			statuses: []int{400}, closed: true},
		{name: "three pipelined requests",
			payload:  get + "\r\n" + get + "\r\n" + get + "\r\n",
			statuses: []int{200, 200, 200}, bankSaw: 3},
		{name: "absolute URI with userinfo",
			payload:  "GET http://user:secret@" + bcHost + accounts + " HTTP/1.1\r\nHost: " + bcHost + "\r\n\r\n",
			statuses: []int{400}, code: "bad_request"},
		{name: "IPv6 literal, no route",
			payload:  "GET http://[::1]:8443/api/v1/accounts HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
			statuses: []int{403}, code: "no_route"},
		{name: "IPv6 literal with a zone",
			payload:  "GET http://[fe80::1%25eth0]/api/v1/accounts HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n",
			statuses: []int{403}, code: "no_route"},
		{name: "malformed IPv6 literal",
			payload:  "GET http://[::1/api HTTP/1.1\r\nHost: x\r\n\r\n",
			statuses: []int{400}, closed: true},
		{name: "percent-encoded host name",
			payload:  "GET http://sandbox%2Ebankingcircleconnect.com" + accounts + " HTTP/1.1\r\nHost: " + bcHost + "\r\n\r\n",
			statuses: []int{400}, closed: true},
		{name: "percent-encoded NUL in host",
			payload:  "GET http://sandbox%00.example" + accounts + " HTTP/1.1\r\nHost: x\r\n\r\n",
			statuses: []int{400}, closed: true},
		{name: "long path (16 KiB)",
			payload:  fwd("GET", "/api/v1/"+strings.Repeat("a", 16<<10), "HTTP/1.1") + "\r\n",
			statuses: []int{404}, bankSaw: 1},
		{name: "very long path (128 KiB)",
			payload:  fwd("GET", "/api/v1/"+strings.Repeat("a", 128<<10), "HTTP/1.1") + "\r\n",
			statuses: []int{431}, closed: true},
	}
}

func TestHostileClients(t *testing.T) {
	e := start(t)
	apiHost := strings.TrimPrefix(e.bank.Emu.APIURL(), "https://")
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.bank.Emu.Received())
			addr := e.proc.L.Proxy
			if tc.local {
				addr = e.proc.L.Local
			}
			wait := tc.wait
			if wait == 0 {
				wait = 3 * time.Second
			}
			ex := send(t, addr, tc.payload, wait)
			got := e.bank.Emu.Received()[before:]
			first := ""
			if len(ex.responses) > 0 {
				first = tokenproxyError(ex.responses[0], ex.bodies[0])
			}
			t.Logf("| %s | %v %s | closed=%v | bank saw %d |", tc.name, ex.statuses(), first, ex.closed, len(got))
			if !slices.Equal(ex.statuses(), tc.statuses) {
				t.Errorf("statuses %v, want %v (err %v)", ex.statuses(), tc.statuses, ex.err)
			}
			if first != tc.code {
				t.Errorf("tokenproxy error code %q, want %q", first, tc.code)
			}
			if tc.closed && !ex.closed {
				t.Errorf("connection left open (err %v), want it closed", ex.err)
			}
			if len(got) != tc.bankSaw {
				t.Errorf("bank received %d requests, want %d", len(got), tc.bankSaw)
			}
			checkReceived(t, got, apiHost)
			if tc.bank != nil && len(got) == tc.bankSaw {
				tc.bank(t, got)
			}
		})
	}
}

// TestSlowloris: a client that trickles its header block is cut off by
// ReadHeaderTimeout (10 s) and the bank sees nothing, while other clients
// keep being served.
func TestSlowloris(t *testing.T) {
	e := start(t)
	c, err := net.Dial("tcp", e.proc.L.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	lines := strings.SplitAfter(fwd("GET", "/api/v1/accounts", "HTTP/1.1")+strings.Repeat("X-Slow: 1\r\n", 40), "\n")
	cut := false
	for _, l := range lines {
		if _, err := c.Write([]byte(l)); err != nil {
			cut = true
			break
		}
		if ex := readAll(c, 500*time.Millisecond); ex.closed || len(ex.responses) > 0 {
			cut = true
			t.Logf("slow client answered %v after %s", ex.statuses(), time.Since(begin).Round(time.Second))
			break
		}
		// Meanwhile a normal client is served.
		if ex := send(t, e.proc.L.Proxy, fwd("GET", "/api/v1/accounts", "HTTP/1.1")+"Connection: close\r\n\r\n", 5*time.Second); !slices.Equal(ex.statuses(), []int{200}) {
			t.Fatalf("a normal client beside the slow one got %v", ex.statuses())
		}
	}
	elapsed := time.Since(begin)
	if !cut || elapsed > 15*time.Second {
		t.Fatalf("slow header client not cut off (after %s)", elapsed)
	}
	if elapsed < 9*time.Second {
		t.Fatalf("slow client cut off after %s, before ReadHeaderTimeout", elapsed)
	}
	for _, r := range e.bank.Emu.Received() {
		if _, ok := r.Header["X-Slow"]; ok {
			t.Fatal("the bank received the slow client's request")
		}
	}
}

// TestStalledReader: a client that asks for a large answer and stops
// reading does not stop others from being served.
func TestStalledReader(t *testing.T) {
	e := start(t)
	for range 4 {
		c, err := net.Dial("tcp", e.proc.L.Proxy)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(fwd("GET", "/api/v1/accounts?PageNumber=1&PageSize=5000", "HTTP/1.1") + "\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		ex := send(t, e.proc.L.Proxy, fwd("GET", "/api/v1/accounts?PageNumber=1&PageSize=1", "HTTP/1.1")+"Connection: close\r\n\r\n", 10*time.Second)
		if !slices.Equal(ex.statuses(), []int{200}) {
			t.Fatalf("request %d beside 4 stalled readers got %v (err %v)", i, ex.statuses(), ex.err)
		}
	}
	resp, err := http.Get("http://" + e.proc.L.Admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	checkReceived(t, e.bank.Emu.Received(), strings.TrimPrefix(e.bank.Emu.APIURL(), "https://"))
}
