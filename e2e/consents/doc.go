// Package consents holds the end-to-end tests of consents on a replicated
// gateway: several real tokenproxy processes (the binary built from
// cmd/tokenproxy) sharing one PostgreSQL consent store and one
// redis-server, in front of the STET emulator with its authorization
// server. It has no code outside its tests.
package consents
