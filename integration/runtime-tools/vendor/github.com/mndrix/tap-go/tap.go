// Package tap is a small re-implementation, written for this local build only, of the API of
// github.com/mndrix/tap-go (which is not packaged in Debian) as runtime-tools uses it:
// it emits TAP version 13 to a writer (os.Stdout by default).
package tap

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// T is a type to encapsulate test state.  Methods on this type generate TAP
// output.
type T struct {
	nextTestNumber *int

	// TODO toggles the TODO directive for Ok, Fail, Pass, and similar.
	TODO bool

	// Writer indicates where TAP output should be sent.  The default is os.Stdout.
	Writer io.Writer
}

// New creates a new Tap value
func New() *T {
	nextTestNumber := 1
	return &T{nextTestNumber: &nextTestNumber}
}

func (t *T) w() io.Writer {
	if t.Writer == nil {
		return os.Stdout
	}
	return t.Writer
}

func (t *T) printf(format string, a ...interface{}) {
	fmt.Fprintf(t.w(), format, a...)
}

// Header displays a TAP header including version number and expected
// number of tests to run.  For an unknown number of tests, set
// testCount to zero (in which case the plan is not written).
func (t *T) Header(testCount int) {
	t.printf("TAP version 13\n")
	if testCount > 0 {
		t.printf("1..%d\n", testCount)
	}
}

// Ok generates TAP output indicating whether a test passed or failed.
func (t *T) Ok(test bool, description string) {
	ok := "ok"
	if !test {
		ok = "not ok"
	}
	directive := ""
	if t.TODO {
		directive = " # TODO"
	}
	description = strings.Replace(description, "\n", " ", -1)
	t.printf("%s %d - %s%s\n", ok, *t.nextTestNumber, description, directive)
	(*t.nextTestNumber)++
}

// Fail indicates that a test has failed.  This is typically only used when the
// logic is too complex to fit naturally into an Ok() call.
func (t *T) Fail(description string) {
	t.Ok(false, description)
}

// Pass indicates that a test has passed.  This is typically only used when the
// logic is too complex to fit naturally into an Ok() call.
func (t *T) Pass(description string) {
	t.Ok(true, description)
}

// Count returns the number of tests completed so far.
func (t *T) Count() int {
	return *t.nextTestNumber - 1
}

// AutoPlan generates a test plan based on the number of tests that were run.
func (t *T) AutoPlan() {
	t.printf("1..%d\n", t.Count())
}

func escapeNewlines(s string) string {
	return strings.Replace(strings.TrimRight(s, "\n"), "\n", "\n# ", -1)
}

// Todo returns copy of the test-state with TODO set.
func (t *T) Todo() *T {
	newT := *t
	newT.TODO = true
	return &newT
}

// Skip indicates that a test has been skipped.
func (t *T) Skip(count int, description string) {
	for i := 0; i < count; i++ {
		t.printf("ok %d # SKIP %s\n", *t.nextTestNumber, description)
		(*t.nextTestNumber)++
	}
}

// Diagnostic generates a diagnostic from the message,
// which may span multiple lines.
func (t *T) Diagnostic(message string) {
	t.printf("# %s\n", escapeNewlines(message))
}

// Diagnosticf generates a diagnostic from the format string and arguments,
// which may span multiple lines.
func (t *T) Diagnosticf(format string, a ...interface{}) {
	t.printf("# " + escapeNewlines(format) + "\n", a...)
}

// YAML generates a YAML block from the message (serialized as JSON, which is
// a subset of YAML, as upstream does by default).
func (t *T) YAML(message interface{}) error {
	marshaled, err := json.MarshalIndent(message, "  ", "  ")
	if err != nil {
		return err
	}
	t.printf("  ---\n  %s\n  ...\n", marshaled)
	return nil
}
