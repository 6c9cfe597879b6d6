package bankingcircle

// Account is one account as GET /api/v1/accounts returns it. Field names,
// order and nullability follow Banking Circle's published example; dates are
// kept as strings so that their exact .NET formatting (seven fractional
// digits, "+00:00") round-trips.
type Account struct {
	AccountID               string              `json:"accountId"`
	AccountDescription      string              `json:"accountDescription"`
	AccountIdentifiers      []AccountIdentifier `json:"accountIdentifiers"`
	IBANs                   []string            `json:"ibans"`
	Status                  string              `json:"status"`
	Currency                string              `json:"currency"`
	OpeningDate             string              `json:"openingDate"`
	ClosingDate             *string             `json:"closingDate"`
	OwnedByCompanyID        string              `json:"ownedByCompanyId"`
	OwnedByCompanyName      string              `json:"ownedByCompanyName"`
	OwnedByCompanyNumber    *string             `json:"ownedByCompanyNumber"`
	ProtectionType          string              `json:"protectionType"`
	Balances                []Balance           `json:"balances"`
	FriendlyName            string              `json:"friendlyName"`
	NetInterestRate         *float64            `json:"netInterestRate"`
	InterestCalcMethod      *string             `json:"interestCalcMethod"`
	OverdraftRate           *float64            `json:"overdraftRate"`
	OverdraftRateCalcMethod *string             `json:"overdraftRateCalcMethod"`
}

// AccountIdentifier is one entry of Account.AccountIdentifiers.
type AccountIdentifier struct {
	Account              string `json:"account"`
	FinancialInstitution string `json:"financialInstitution"`
	Country              string `json:"country"`
}

// Balance is one entry of Account.Balances.
type Balance struct {
	Type                     string  `json:"type"`
	Currency                 string  `json:"currency"`
	BeginOfDayAmount         float64 `json:"beginOfDayAmount"`
	FinancialDate            string  `json:"financialDate"`
	IntraDayAmount           float64 `json:"intraDayAmount"`
	LastTransactionTimestamp *string `json:"lastTransactionTimestamp"`
}

// AccountsPage is the body of a successful GET /api/v1/accounts: the page of
// accounts under "result" and the paging echoed under "pageInfo", as the real
// API wraps its lists.
type AccountsPage struct {
	Result   []Account `json:"result"`
	PageInfo PageInfo  `json:"pageInfo"`
}

// PageInfo echoes the page served.
type PageInfo struct {
	CurrentPage int `json:"currentPage"`
	PageSize    int `json:"pageSize"`
}

// DefaultAccounts returns the accounts served when Config.Accounts is nil:
// first the account from Banking Circle's "authenticate and retrieve
// accounts" guide, field for field, then two more in other currencies so that
// paging and the Currency filter have something to work on.
func DefaultAccounts() []Account {
	lastTx := "2024-02-21T12:03:01.3099984+00:00"
	seed := Account{
		AccountID:          "3fa85f64-5717-4562-b3fc-2c963f66afa6",
		AccountDescription: "Description of the account",
		AccountIdentifiers: []AccountIdentifier{
			{Account: "DK6289000049910085", FinancialInstitution: "", Country: "DK"},
		},
		IBANs:              []string{"DK6289000049910085", "LU734080000049971008", "DE422022080000499910085"},
		Status:             "Active",
		Currency:           "EUR",
		OpeningDate:        "2023-02-21T00:00:00+00:00",
		OwnedByCompanyID:   "2920e27e-b112-4b09-8ae6-c6f4aaacd3c7",
		OwnedByCompanyName: "ACME industries Ltd",
		ProtectionType:     "None",
		Balances: []Balance{{
			Type:                     "CurrentBalance",
			Currency:                 "EUR",
			BeginOfDayAmount:         999,
			FinancialDate:            "2024-02-21T00:00:00+00:00",
			IntraDayAmount:           0,
			LastTransactionTimestamp: &lastTx,
		}},
		FriendlyName: "",
	}
	gbp := Account{
		AccountID:          "9b2f6c1e-4d7a-4f3b-8e21-5a0c7d9e1b42",
		AccountDescription: "GBP operating account",
		AccountIdentifiers: []AccountIdentifier{
			{Account: "DK5189000049910093", FinancialInstitution: "", Country: "DK"},
		},
		IBANs:              []string{"DK5189000049910093"},
		Status:             "Active",
		Currency:           "GBP",
		OpeningDate:        "2023-03-01T00:00:00+00:00",
		OwnedByCompanyID:   "2920e27e-b112-4b09-8ae6-c6f4aaacd3c7",
		OwnedByCompanyName: "ACME industries Ltd",
		ProtectionType:     "None",
		Balances: []Balance{{
			Type:             "CurrentBalance",
			Currency:         "GBP",
			BeginOfDayAmount: 12500.75,
			FinancialDate:    "2024-02-21T00:00:00+00:00",
			IntraDayAmount:   -250.5,
		}},
		FriendlyName: "Operations",
	}
	closed := "2024-01-31T00:00:00+00:00"
	dkk := Account{
		AccountID:          "c7d1e8a4-2b6f-4c19-9d3e-7f5a1b0c8e63",
		AccountDescription: "DKK settlement account",
		AccountIdentifiers: []AccountIdentifier{
			{Account: "DK3389000049910107", FinancialInstitution: "", Country: "DK"},
		},
		IBANs:              []string{"DK3389000049910107"},
		Status:             "Closed",
		Currency:           "DKK",
		OpeningDate:        "2022-06-15T00:00:00+00:00",
		ClosingDate:        &closed,
		OwnedByCompanyID:   "2920e27e-b112-4b09-8ae6-c6f4aaacd3c7",
		OwnedByCompanyName: "ACME industries Ltd",
		ProtectionType:     "None",
		Balances: []Balance{{
			Type:          "CurrentBalance",
			Currency:      "DKK",
			FinancialDate: "2024-01-31T00:00:00+00:00",
		}},
		FriendlyName: "",
	}
	return []Account{seed, gbp, dkk}
}
