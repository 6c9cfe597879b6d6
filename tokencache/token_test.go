package tokencache

import (
	"fmt"
	"strings"
	"testing"
)

func TestTokenDoesNotPrint(t *testing.T) {
	tok := &Token{Value: "supersecret", Header: "Bearer supersecret"}
	for _, s := range []string{tok.String(), fmt.Sprintf("%v %s %+v", tok, tok, tok)} {
		if strings.Contains(s, "supersecret") {
			t.Fatalf("token printed: %q", s)
		}
	}
}
