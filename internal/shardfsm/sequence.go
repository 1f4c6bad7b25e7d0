package shardfsm

import (
	"strings"

	"github.com/kinactor/kinactor/internal/lease"
)

// ValidSequence reports whether s looks like a Kinesis sequence number: a
// non-empty string of decimal digits (Kinesis uses up to 128 digits).
func ValidSequence(s string) bool {
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

// CompareSequences compares two decimal sequence numbers numerically
// (they are too large for any integer type): -1, 0 or +1.
func CompareSequences(a, b string) int {
	a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

// CompareCheckpoints orders two real (non-sentinel) checkpoints by sequence
// number, then sub-sequence number.
func CompareCheckpoints(a, b lease.Checkpoint) int {
	if c := CompareSequences(a.SequenceNumber, b.SequenceNumber); c != 0 {
		return c
	}
	switch {
	case a.SubSequenceNumber < b.SubSequenceNumber:
		return -1
	case a.SubSequenceNumber > b.SubSequenceNumber:
		return 1
	}
	return 0
}
