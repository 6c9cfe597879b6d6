// Command idleconns opens many keep-alive connections to an HTTP proxy, sends
// one request on each and then holds them all idle, so that the proxy's
// resident memory per idle client connection can be read. It prints "ready"
// once every connection has had its answer and exits after -hold, or at once
// on SIGTERM or SIGINT. It is part of bench/load.sh.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "proxy address to connect to")
	target := flag.String("url", "http://api.example/", "request target: an absolute URL (forward proxy) or a path (local port)")
	host := flag.String("host", "api.example", "Host header")
	n := flag.Int("n", 1000, "connections")
	par := flag.Int("parallel", 16, "connections being opened at once")
	hold := flag.Duration("hold", 60*time.Second, "how long to hold the idle connections")
	flag.Parse()

	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: idleconns\r\n\r\n", *target, *host)
	conns := make([]net.Conn, *n)
	errs := make(chan error, *n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range *par {
		wg.Go(func() {
			for i := range next {
				c, err := open(*addr, req)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				conns[i] = c
			}
		})
	}
	start := time.Now()
	for i := range *n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			fmt.Fprintln(os.Stderr, "idleconns:", err)
		}
		failed++
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "idleconns: %d of %d connections failed\n", failed, *n)
		os.Exit(1)
	}
	fmt.Printf("ready: %d idle keep-alive connections (opened in %v)\n", *n, time.Since(start).Round(time.Millisecond))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(*hold):
	}
	for _, c := range conns {
		c.Close()
	}
}

// open dials addr, sends req and reads the whole answer, leaving the
// connection open and idle.
func open(addr, req string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err == nil && resp.Close {
		err = fmt.Errorf("the proxy closed the connection")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
