package tokencache

import (
	"slices"
	"time"
)

// The budget promise, stated in the provider's terms.
//
// A provider that allows N token requests per minute counts the requests
// that *arrive* in any rolling window of BankWindow. A request sent at s and
// completed (answered, failed or timed out) at c can arrive at the provider
// at any time in [s, c]: not before it is sent, not after it is answered (an
// unanswered request is abandoned at c). The cache therefore keeps each
// request "in the window" from its send time until c + BankWindow + Margin,
// and sends a new request only while fewer than N requests are kept.
//
// Claim: no interval of length BankWindow at the provider sees more than N
// of our requests. Proof: take the requests that arrive in one interval
// [x, x+W) and let r be the last of them to be sent, at s_r ≤ a_r < x+W.
// Every other one, j, arrived at a_j ≥ x > s_r - W and completed at
// c_j ≥ a_j, so c_j + W > s_r: j was still kept when r was sent (it was sent
// before r, and is kept until c_j + W + Margin). r was sent only because
// fewer than N were kept, so the interval holds at most N.
//
// Margin absorbs what the proof idealises: the provider's clock granularity
// and where in its stack it stamps the arrival. A request in flight is kept
// until s + FetchTimeout + BankWindow + Margin, the latest its completion can
// be, so a process that dies mid-request still leaves a bounded entry (this
// is what the Redis budget relies on).

// BankWindow is the provider's counting window for a per-minute budget.
const BankWindow = time.Minute

// DefaultMargin is added to BankWindow for each request (see above): two
// seconds cover a coarse provider clock and clock differences between
// replicas that stamp completions.
const DefaultMargin = 2 * time.Second

// nextSend returns the earliest time at or after now when one more request
// may be sent, given until, the times at which earlier requests stop
// counting (the slice is reordered). With limit ≤ 0 it returns the zero Time:
// never.
func nextSend(now time.Time, until []time.Time, limit int) time.Time {
	if limit <= 0 {
		return time.Time{}
	}
	live := until[:0]
	for _, u := range until {
		if u.After(now) {
			live = append(live, u)
		}
	}
	if len(live) < limit {
		return now
	}
	// Fewer than limit remain once the len(live)-limit+1 earliest expire.
	slices.SortFunc(live, func(a, b time.Time) int { return a.Compare(b) })
	return live[len(live)-limit]
}
