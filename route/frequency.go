package route

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// AccessKey names the count of one consent's unattended calls in one bank
// day: the consent's route, owner (the gateway caller, "" in sidecar mode)
// and subject, and the day.
type AccessKey struct {
	Route, Owner, Subject string
	// Day is the bank day, YYYY-MM-DD in the route's time zone.
	Day string
}

// AccessCounter counts consents' unattended calls where every replica sees
// the same count and a restart keeps it (Redis, the consent store).
type AccessCounter interface {
	// TakeAccess counts one call of k when fewer than limit are counted and
	// returns the count with it (taken); when limit calls are counted it
	// counts nothing and returns taken false. expires is the end of k's day:
	// the count may be forgotten after it.
	TakeAccess(ctx context.Context, k AccessKey, limit int, expires time.Time) (count int, taken bool, err error)
}

// AccessObserver counts the access budget's decisions, for metrics. Its
// methods must not block.
type AccessObserver interface {
	// AccessCounted: an unattended call was counted and sent.
	AccessCounted(route string)
	// AccessRefused: an unattended call was refused, reason "exceeded"
	// (the day's budget is spent) or "unavailable" (the count could not
	// be taken).
	AccessRefused(route, reason string)
}

// Frequency is a route's access budget per consent and bank day (a Berlin
// Group consent's frequencyPerDay): at most Limit unattended calls per
// customer, reset at midnight in Location.
type Frequency struct {
	Limit    int
	Location *time.Location
	// Methods count (upper case); Paths, when not empty, are the path
	// prefixes that count.
	Methods []string
	Paths   []string
	// AttendedHeader, present and not empty, marks a call the customer is
	// present for: neither counted nor refused.
	AttendedHeader string
	Counter        AccessCounter
	// Observer may be nil.
	Observer AccessObserver
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Timeout bounds one count; 2 s when 0.
	Timeout time.Duration
}

// SetFrequency gives a per-customer route its access budget.
func (r *Route) SetFrequency(f Frequency) {
	if f.Now == nil {
		f.Now = time.Now
	}
	if f.Timeout <= 0 {
		f.Timeout = 2 * time.Second
	}
	f.AttendedHeader = http.CanonicalHeaderKey(f.AttendedHeader)
	r.frequency = &f
}

// FrequencyExceededError is an unattended call refused because the
// consent's calls of the bank day are spent.
type FrequencyExceededError struct {
	Route, Subject string
	Limit          int
	// Reset is when the next bank day starts and the count with it;
	// RetryAfter is the time until then.
	Reset      time.Time
	RetryAfter time.Duration
}

func (e *FrequencyExceededError) Error() string {
	return fmt.Sprintf("customer %s on route %s has made the %d unattended calls its consent allows today; the count resets at %s",
		e.Subject, e.Route, e.Limit, e.Reset.Format(time.RFC3339))
}

// AccessCountError is an unattended call refused because its count could
// not be taken (the counter's store is unreachable): it is never sent
// uncounted, since it might be over the budget.
type AccessCountError struct {
	Route string
	Err   error
}

func (e *AccessCountError) Error() string {
	return "route " + e.Route + ": counting the consent's access failed: " + e.Err.Error()
}

func (e *AccessCountError) Unwrap() error { return e.Err }

// CountAccess counts req against its consent's budget when the route has
// one and req is an unattended call that counts (Frequency): nil when req
// may be sent, *FrequencyExceededError when the day's calls are spent,
// *AccessCountError when the count could not be taken. caller is the
// authenticated gateway caller ("" in sidecar mode). Call it once per
// request, right before the request first goes upstream.
func (r *Route) CountAccess(req *http.Request, caller string) error {
	f := r.frequency
	if f == nil {
		return nil
	}
	subject, named := r.Subject(req)
	if !named || !f.counts(req) {
		return nil
	}
	now := f.Now()
	day, reset := BankDay(now, f.Location)
	ctx, cancel := context.WithTimeout(req.Context(), f.Timeout)
	defer cancel()
	_, taken, err := f.Counter.TakeAccess(ctx, AccessKey{Route: r.Name, Owner: caller, Subject: subject, Day: day}, f.Limit, reset)
	switch {
	case err != nil:
		f.refused(r.Name, "unavailable")
		return &AccessCountError{Route: r.Name, Err: err}
	case !taken:
		f.refused(r.Name, "exceeded")
		return &FrequencyExceededError{Route: r.Name, Subject: subject, Limit: f.Limit, Reset: reset, RetryAfter: reset.Sub(now)}
	}
	if f.Observer != nil {
		f.Observer.AccessCounted(r.Name)
	}
	return nil
}

func (f *Frequency) refused(route, reason string) {
	if f.Observer != nil {
		f.Observer.AccessRefused(route, reason)
	}
}

// counts reports whether req is an unattended call of a kind that counts.
func (f *Frequency) counts(req *http.Request) bool {
	if v := req.Header[f.AttendedHeader]; len(v) > 0 && strings.TrimSpace(v[0]) != "" {
		return false
	}
	if !slices.Contains(f.Methods, req.Method) {
		return false
	}
	if len(f.Paths) == 0 {
		return true
	}
	return slices.ContainsFunc(f.Paths, func(p string) bool { return strings.HasPrefix(req.URL.Path, p) })
}

// BankDay returns the day t falls on in loc (YYYY-MM-DD) and the instant
// the next day starts there, when the day's count resets. Days are calendar
// days of loc, so a day with a DST change lasts 23 or 25 hours; a day whose
// midnight a DST change skips starts at the change.
func BankDay(t time.Time, loc *time.Location) (day string, reset time.Time) {
	lt := t.In(loc)
	y, m, d := lt.Date()
	return lt.Format(time.DateOnly), dayStart(y, m, d+1, loc)
}

// dayStart is the first instant of the day y-m-d in loc (d may overflow
// the month, as time.Date allows).
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	want := time.Date(y, m, d, 12, 0, 0, 0, time.UTC) // normalised date, no zone
	s := time.Date(y, m, d, 0, 0, 0, 0, loc)
	switch c := cmpDate(s, want); {
	case c < 0:
		// Midnight was skipped (the clocks jumped over it): s is the old
		// zone's reading, still on the day before; the day starts where
		// that zone ends.
		_, end := s.ZoneBounds()
		if !end.IsZero() {
			return end
		}
	case c > 0:
		// The whole day was skipped (Samoa, 2011-12-30): the next day
		// starts at s.
		return s
	}
	// Midnight twice (the clocks went back over it): time.Date may give
	// the later one; the day starts at the earlier.
	for range 2 {
		start, _ := s.ZoneBounds()
		if start.IsZero() {
			return s
		}
		prev := start.Add(-time.Nanosecond)
		if cmpDate(prev, want) != 0 {
			return s
		}
		_, off := prev.Zone()
		e := time.Date(want.Year(), want.Month(), want.Day(), 0, 0, 0, 0, time.FixedZone("", off)).In(loc)
		if !e.Before(s) || cmpDate(e, want) != 0 {
			return s
		}
		s = e
	}
	return s
}

// cmpDate compares the calendar date of t (in its own location) with want's.
func cmpDate(t, want time.Time) int {
	num := func(t time.Time) int { y, m, d := t.Date(); return y*10000 + int(m)*100 + d }
	return cmp.Compare(num(t), num(want))
}
