package fapi

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tokenproxy/tokenproxy/testkit/e2eenv"
)

// binary is the tokenproxy executable built once by TestMain ("" under -short).
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // every test skips; nothing to build
	}
	dir, err := os.MkdirTemp("", "tokenproxy-e2e-fapi-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if binary, err = e2eenv.Build(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "building tokenproxy:", err)
		return 1
	}
	return m.Run()
}
