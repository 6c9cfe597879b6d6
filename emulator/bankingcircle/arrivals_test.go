package bankingcircle_test

import (
	"net/http"
	"testing"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// Two clients behind one IP, one of them during a fault: each arrival is
// attributed to the certificate that sent it.
func TestTokenArrivalsByClient(t *testing.T) {
	f := start(t, nil)
	other, err := f.ca.IssueClient("second client")
	if err != nil {
		t.Fatal(err)
	}
	f.authorize(t)
	f.emu.SetTokenFault(bankingcircle.Fault{Kind: bankingcircle.FaultStatus, Status: 500})
	do(t, f.clientWith(other), http.MethodGet, f.emu.AuthURL()+bankingcircle.AuthorizePath, basic(user, pass))
	f.emu.SetTokenFault(bankingcircle.Fault{})
	f.authorize(t)

	got := f.emu.TokenArrivalsByClient()
	first, second := pki.Fingerprint(f.cert.Leaf), pki.Fingerprint(other.Leaf)
	want := []string{first, second, first}
	if len(got) != len(want) || len(f.emu.TokenArrivals()) != len(want) {
		t.Fatalf("%d arrivals by client, %d arrivals; want %d", len(got), len(f.emu.TokenArrivals()), len(want))
	}
	for i, a := range got {
		if a.Fingerprint != want[i] || a.Time.IsZero() {
			t.Errorf("arrival %d: %+v; want fingerprint %s", i, a, want[i])
		}
	}
}
