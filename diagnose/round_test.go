package diagnose

import (
	"testing"
	"time"
)

func TestRound(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{29999999830 * time.Nanosecond, "30s"},
		{90*time.Second + 400*time.Millisecond, "1m30s"},
		{1234567 * time.Microsecond, "1s"},
		{123456789 * time.Nanosecond, "123ms"},
	} {
		if got := round(tc.in).String(); got != tc.want {
			t.Errorf("round(%v) = %s; want %s", tc.in, got, tc.want)
		}
	}
}
