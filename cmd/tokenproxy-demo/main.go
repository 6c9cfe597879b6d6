// Command tokenproxy-demo runs tokenproxy end to end against built-in bank
// emulators, on this machine only, with no credentials and no files:
//
//	go run ./cmd/tokenproxy-demo
//	go run ./cmd/tokenproxy-demo --serve --listen 127.0.0.1:8080
//
// It is a separate command so that the production binary, cmd/tokenproxy,
// carries no emulator and no test certificate authority.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/tokenproxy/tokenproxy/cli"
	"github.com/tokenproxy/tokenproxy/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, runs the demo and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tokenproxy-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var verbose bool
	var o demo.Options
	fs.BoolVar(&verbose, "verbose", false, "also print tokenproxy's log lines (stderr)")
	fs.BoolVar(&verbose, "v", false, "shorthand for --verbose")
	fs.BoolVar(&o.Serve, "serve", false, "after the report, keep the emulators and tokenproxy running (until Ctrl-C) to try them with curl")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:0", "forward-proxy address of the demo (e.g. 127.0.0.1:8080 with --serve)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cli.ExitOK
		}
		return cli.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tokenproxy-demo: unexpected argument %q\n", fs.Arg(0))
		return cli.ExitUsage
	}
	if verbose {
		log, err := cli.NewLogger(stderr, "info", "console")
		if err != nil {
			fmt.Fprintln(stderr, "tokenproxy-demo:", err)
			return cli.ExitFailure
		}
		defer func() { _ = log.Sync() }()
		o.Log = log
	} else {
		o.Log = zap.NewNop()
	}
	if err := demo.Run(ctx, stdout, o); err != nil {
		fmt.Fprintln(stderr, "tokenproxy-demo:", err)
		return cli.ExitFailure
	}
	return cli.ExitOK
}
