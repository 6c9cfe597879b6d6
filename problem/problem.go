// Package problem is tokenproxy's error vocabulary: a field error that names
// where a configuration or credential problem is and how to fix it, and one
// classifier of failed exchanges with an upstream, shared by the proxy's
// answers to apps and by `tokenproxy check`. It imports nothing of the project.
package problem

// FieldError is a problem with one field of the configuration or with the
// credential it names.
type FieldError struct {
	// Path locates the field, e.g. routes[0](bankingcircle).token.password.
	Path string
	// Err says what is wrong.
	Err error
	// Fix says how to put it right; empty when Err already says so.
	Fix string
}

func (e *FieldError) Error() string {
	s := e.Path + ": " + e.Err.Error()
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

func (e *FieldError) Unwrap() error { return e.Err }

// Field returns a FieldError whose message is msg (what is wrong and, after a
// semicolon, the fix, as configuration messages are written).
func Field(path, msg string) *FieldError { return &FieldError{Path: path, Err: message(msg)} }

// message is an error that is only its text.
type message string

func (m message) Error() string { return string(m) }
