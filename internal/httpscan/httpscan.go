// Package httpscan follows raw HTTP/1.1 header blocks as their bytes go by,
// for the framing checks on both sides of the proxy: the requests apps send
// and the answers upstreams return. It notes whether a block names both
// Content-Length and Transfer-Encoding (RFC 9112 section 6.3), which
// net/http resolves silently before anyone sees it.
package httpscan

// Block follows one header block at a time. The zero value is ready.
type Block struct {
	line [24]byte // the current line, lowercased, first bytes only
	n    int      // the current line's whole length
	// CL and TE say whether the block so far named Content-Length and
	// Transfer-Encoding.
	CL, TE bool
}

// Add feeds one byte. At '\n' it returns the line that ended (lowercased,
// at most its first 24 bytes), the line's whole length, and true; the next
// byte starts a new line.
func (b *Block) Add(ch byte) (line []byte, n int, ended bool) {
	if ch != '\n' {
		if b.n < len(b.line) {
			b.line[b.n] = lower(ch)
		}
		b.n++
		return nil, 0, false
	}
	n = b.n
	b.n = 0
	return b.line[:min(n, len(b.line))], n, true
}

// Blank reports whether a line Add returned is the empty line that ends a
// header block.
func Blank(line []byte, n int) bool { return n == 0 || (n == 1 && line[0] == '\r') }

// Field notes a header line that names Content-Length or Transfer-Encoding.
func (b *Block) Field(line []byte) {
	switch {
	case hasFieldName(line, "content-length"):
		b.CL = true
	case hasFieldName(line, "transfer-encoding"):
		b.TE = true
	}
}

// End closes the block at its empty line: it reports whether the block
// named both framing fields and starts the next block afresh.
func (b *Block) End() (ambiguous bool) {
	ambiguous = b.CL && b.TE
	b.CL, b.TE = false, false
	return ambiguous
}

// Reset forgets the block and the line in progress.
func (b *Block) Reset() { *b = Block{} }

// PendingCR reports whether the line in progress is a lone '\r': the start
// of a block's empty line, whose '\n' has not arrived yet.
func (b *Block) PendingCR() bool { return b.n == 1 && b.line[0] == '\r' }

// hasFieldName reports whether line starts with name followed by optional
// blanks and a colon (blanks before the colon are invalid, but a lenient
// peer might accept them).
func hasFieldName(line []byte, name string) bool {
	if len(line) <= len(name) || string(line[:len(name)]) != name {
		return false
	}
	for _, ch := range line[len(name):] {
		switch ch {
		case ':':
			return true
		case ' ', '\t':
		default:
			return false
		}
	}
	return false
}

func lower(b byte) byte {
	if 'A' <= b && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}
