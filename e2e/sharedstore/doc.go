// Package sharedstore holds the end-to-end tests of the shared token store:
// several real tokenproxy processes (the binary built from cmd/tokenproxy)
// against one Banking Circle emulator over mTLS and one redis-server. It
// has no code outside its tests.
package sharedstore
