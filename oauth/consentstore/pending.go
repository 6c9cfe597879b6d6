package consentstore

import "time"

// Pending is a started consent waiting for the customer's return (consent
// API state). Verifier is the PKCE code verifier: a store seals it.
type Pending struct {
	State       string    `json:"state"`
	Route       string    `json:"route"`
	Owner       string    `json:"owner,omitempty"`
	Subject     string    `json:"subject"`
	Verifier    string    `json:"verifier,omitempty"`
	RedirectURI string    `json:"redirect_uri,omitempty"`
	ReturnURL   string    `json:"return_url,omitempty"`
	Expires     time.Time `json:"expires"`
}
