// Command soak runs the released tokenproxy binary for a bounded time — a
// sidecar and, unless -replicas 1, gateway replicas sharing one private
// redis-server (stopped and restarted during the run), all in front of one
// Banking Circle emulator — while a fault schedule plays: tokens expiring every few seconds, the token endpoint answering
// 429 (with and without Retry-After), 500, slowly, with resets and broken
// JSON; the API answering 5xx, slowly, with resets, cut bodies and closed
// kept-alive connections; the client certificate rotated on disk every
// minute, once through a version that does not decrypt; Vault and Redis
// stopped and restarted. It ends with a SIGTERM drain while requests are in flight. Everything runs on loopback.
//
// It reports requests sent, served and failed, each failure classified as
// could-not-be-served (tokenproxy said no valid credential existed, or the
// bank's API failed, while the schedule says so) or a defect; the most token
// requests the bank saw in any rolling minute against its budget;
// goroutines, heap, RSS and open descriptors of every process over time (a
// CSV); and secrets found in every process's log and metrics. It exits 1 on any defect, budget
// overrun, leak trend or secret found, 2 when it could not run.
//
//	go run ./tools/soak -duration 5m -out /tmp/soak
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// options are the command line.
type options struct {
	duration    time.Duration
	clients     int
	gwClients   int
	redisDown   time.Duration
	pause       time.Duration
	phase       time.Duration
	rotate      time.Duration
	tokenTTL    time.Duration
	budget      int
	replicas    int
	out         string
	sampleEvery time.Duration
	vault       bool
	only        string
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 3*time.Minute, "how long the load and the fault schedule run (the drain follows)")
	flag.IntVar(&o.clients, "clients", 4, "concurrent app clients of the sidecar")
	flag.IntVar(&o.gwClients, "gateway-clients", 6, "concurrent app clients spread over the gateway replicas")
	flag.DurationVar(&o.redisDown, "redis-down", 10*time.Second, "how long Redis stays stopped each time")
	flag.DurationVar(&o.pause, "pause", 50*time.Millisecond, "each client's pause between requests")
	flag.DurationVar(&o.phase, "phase", 8*time.Second, "length of one phase of the fault schedule")
	flag.DurationVar(&o.rotate, "rotate", time.Minute, "client-certificate rotation period")
	flag.DurationVar(&o.tokenTTL, "token-ttl", 5*time.Second, "lifetime of the bank's tokens")
	flag.IntVar(&o.budget, "budget", 0, "the bank's token requests per minute per IP (its 429 threshold), split evenly between the sidecar and the gateway replicas (default 30 per group)")
	flag.IntVar(&o.replicas, "replicas", 3, "gateway replicas sharing Redis, run beside the sidecar; 1 runs the sidecar alone")
	flag.StringVar(&o.out, "out", "", "directory for samples.csv, report.txt and tokenproxy.log (default: a temporary directory)")
	flag.DurationVar(&o.sampleEvery, "sample", 2*time.Second, "resource sampling period")
	flag.BoolVar(&o.vault, "vault", true, "read the token password from a private Vault dev server that is stopped and restarted (skipped when no binary is cached)")
	flag.StringVar(&o.only, "phases", "", "play only the fault phases whose names contain one of these comma-separated words (calm phases stay)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	failed, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, stdout *os.File) (failed bool, err error) {
	if o.replicas < 1 {
		return false, errors.New("-replicas must be at least 1")
	}
	if o.budget == 0 {
		o.budget = 30
		if o.replicas > 1 {
			o.budget = 60
		}
	}
	if o.out == "" {
		if o.out, err = os.MkdirTemp("", "tokenproxy-soak-"); err != nil {
			return false, err
		}
	} else if err := os.MkdirAll(o.out, 0o750); err != nil {
		return false, err
	}
	h, err := setup(ctx, o)
	if err != nil {
		return false, err
	}
	defer h.close()
	rep, err := h.play(ctx, o)
	if err != nil {
		return false, err
	}
	return rep.write(stdout, o, h)
}

// sigterm stops tokenproxy gracefully.
var sigterm = syscall.SIGTERM
