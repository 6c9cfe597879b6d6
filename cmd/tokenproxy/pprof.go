//go:build pprof

// Profiling for benchmarks only. A binary built with `-tags pprof` serves
// net/http/pprof on the loopback address named by TOKENPROXY_PPROF (for
// example 127.0.0.1:6060); without the tag none of this is compiled in, and
// without the variable nothing listens.
package main

import (
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

func init() {
	addr := os.Getenv("TOKENPROXY_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "tokenproxy: TOKENPROXY_PPROF=%q must be a loopback host:port\n", addr)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tokenproxy: pprof listener: %v\n", err)
		os.Exit(2)
	}
	go func() { _ = http.Serve(ln, http.DefaultServeMux) }()
}
