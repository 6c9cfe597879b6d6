package httpscan

import "testing"

func TestBlock(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        string
		ambiguous []bool // one per block ended
	}{
		{"both", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", []bool{true}},
		{"mixed case, blanks before the colon", "GET / HTTP/1.1\r\ncontent-LENGTH : 3\r\nTRANSFER-encoding:\tchunked\r\n\r\n", []bool{true}},
		{"only one", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", []bool{false}},
		{"a name that only starts alike", "HTTP/1.1 200 OK\r\nContent-Lengthy: 3\r\nTransfer-Encoding: chunked\r\n\r\n", []bool{false}},
		{"two blocks, each judged on its own", "A\r\nContent-Length: 1\r\n\r\nB\r\nTransfer-Encoding: chunked\r\n\n", []bool{false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Block
			var got []bool
			for i := 0; i < len(tc.in); i++ {
				line, n, ended := b.Add(tc.in[i])
				switch {
				case !ended:
				case Blank(line, n):
					got = append(got, b.End())
				default:
					b.Field(line)
				}
			}
			if len(got) != len(tc.ambiguous) {
				t.Fatalf("blocks %v; want %v", got, tc.ambiguous)
			}
			for i := range got {
				if got[i] != tc.ambiguous[i] {
					t.Fatalf("blocks %v; want %v", got, tc.ambiguous)
				}
			}
		})
	}
}

func TestPendingCR(t *testing.T) {
	var b Block
	for _, ch := range []byte("X: y\r\n\r") {
		b.Add(ch)
	}
	if !b.PendingCR() {
		t.Fatal("a lone '\\r' after a line is the start of the empty line")
	}
	b.Add('\n')
	if b.PendingCR() {
		t.Fatal("the empty line ended")
	}
}
