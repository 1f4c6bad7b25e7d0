// Package seqnum owns Kinesis sequence numbers: decimal strings of up to
// 128 digits, too large for any integer type, compared numerically. It is
// the one place they are compared; it imports nothing of kinactor.
package seqnum

import "strings"

// Valid reports whether s looks like a Kinesis sequence number: a
// non-empty string of decimal digits, at most 128 of them.
func Valid(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Compare compares two decimal sequence numbers numerically: -1, 0 or +1.
// Leading zeros do not count.
func Compare(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}
