package bankingcircle_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"

	"github.com/tokenproxy/tokenproxy/emulator/bankingcircle"
	"github.com/tokenproxy/tokenproxy/testkit/pki"
)

// Example starts the emulator with certificates made in memory and walks
// through the seed guide: a token from the authorization host, then the
// accounts from the API host, both over mTLS.
func Example() {
	ca, _ := pki.NewCA("Test Bank Root")
	serverCert, _ := ca.IssueServer([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	clientCert, _ := ca.IssueClient("m2m-user")

	emu, err := bankingcircle.New(bankingcircle.Config{
		ServerCert:             serverCert,
		ClientCAs:              ca.CertPool(),
		Username:               "m2m-user",
		Password:               "secret",
		TokenRequestsPerMinute: 10,
	})
	if err != nil {
		panic(err)
	}
	if err := emu.Start(); err != nil {
		panic(err)
	}
	defer emu.Close()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      ca.CertPool(),
		Certificates: []tls.Certificate{*clientCert},
	}}}

	req, _ := http.NewRequest(http.MethodGet, emu.AuthURL()+bankingcircle.AuthorizePath, nil)
	req.SetBasicAuth("m2m-user", "secret")
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	var tok bankingcircle.TokenResponse
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil {
		panic(err)
	}
	fmt.Println("token:", resp.StatusCode, tok.TokenType, "expires_in", tok.ExpiresIn)

	req, _ = http.NewRequest(http.MethodGet, emu.APIURL()+bankingcircle.AccountsPath+"?PageNumber=1&PageSize=50", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = client.Do(req)
	if err != nil {
		panic(err)
	}
	var page bankingcircle.AccountsPage
	err = json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil {
		panic(err)
	}
	fmt.Println("accounts:", resp.StatusCode, len(page.Result), page.Result[0].OwnedByCompanyName, page.PageInfo)

	st := emu.Stats()
	fmt.Println("tokens issued:", st.TokensIssued, "accounts served:", st.AccountsServed, "handshakes:", st.Handshakes)
	// Output:
	// token: 200 Bearer expires_in 300
	// accounts: 200 3 ACME industries Ltd {1 50}
	// tokens issued: 1 accounts served: 1 handshakes: 2
}
