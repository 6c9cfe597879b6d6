// Command tokenproxy is a credential and token broker for APIs that demand
// mTLS, short-lived bearer tokens and signed requests.
package main

import (
	"os"
	// The time zone database, for frequency_per_day's bank day on hosts
	// and images without /usr/share/zoneinfo (distroless static).
	_ "time/tzdata"

	"github.com/tokenproxy/tokenproxy/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:]))
}
