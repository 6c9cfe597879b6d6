package reload

import (
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	at := time.Unix(1, 0)
	for _, tc := range []struct {
		r    Result
		want string
	}{
		{Result{}, ""},
		{Result{Time: at, Outcome: Success, Kept: []string{"a"}, Rebuilt: []string{"b"}, Added: []string{"d", "e"}, Removed: []string{"c"}},
			"kept a; rebuilt b; added d, e; removed c"},
		{Result{Time: at, Outcome: Success}, "no route changed"},
		{Result{Time: at, Outcome: Refused, Error: "listen.proxy needs a restart"}, "refused: listen.proxy needs a restart"},
		{Result{Time: at, Outcome: Failure, Error: "routes[0].upstream: missing"}, "failure: routes[0].upstream: missing"},
	} {
		if got := tc.r.Summary(); got != tc.want {
			t.Errorf("Summary(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}
