package kpl

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDeaggregate: Deaggregate never panics; it agrees with proto.Unmarshal
// into dynamicpb (refDeaggregate) on success or failure and on the records;
// and a successful result survives Aggregate -> Deaggregate unchanged.
//
// Inputs that fail the digest check are mostly uninteresting, so the fuzz
// input is used twice: as is, and as a protobuf framed with magic and its
// correct digest.
func FuzzDeaggregate(f *testing.F) {
	for _, n := range []int{1, 2, 5} {
		data, err := Aggregate(makeRecords(n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[len(Magic) : len(data)-16])
	}
	f.Add(refAggregate(f, makeRecords(3), [][]tag{{{"k", "v"}}, nil, {{"a", ""}}}))
	f.Add([]byte{})
	f.Add(Magic)
	f.Add(frame(nil))
	f.Add(frame([]byte{1<<3 | 2, 1, 'k', 3<<3 | 2, 4, 1 << 3, 1, 3<<3 | 2, 0}))
	f.Fuzz(func(t *testing.T, in []byte) {
		check(t, in)
		check(t, frame(in))
	})
}

func check(t *testing.T, data []byte) {
	got, err := Deaggregate(data)
	ref, rerr := refDeaggregate(t, data)
	if (err == nil) != (rerr == nil) {
		t.Fatalf("Deaggregate err %v, proto.Unmarshal reference err %v", err, rerr)
	}
	if err != nil {
		if !errors.Is(err, ErrBadDigest) && !errors.Is(err, ErrBadProtobuf) && !errors.Is(err, ErrBadIndex) {
			t.Fatalf("error is none of the sentinels: %v", err)
		}
		if got != nil {
			t.Fatalf("records %v with error %v", got, err)
		}
		return
	}
	if !sameRecords(got, ref) {
		t.Fatalf("Deaggregate %+v, reference %+v", got, ref)
	}
	if len(got) == 0 {
		return
	}
	again, err := Aggregate(got)
	if err != nil {
		t.Fatalf("re-aggregate: %v", err)
	}
	back, err := Deaggregate(again)
	if err != nil {
		t.Fatalf("de-aggregate re-aggregated: %v", err)
	}
	if !sameRecords(back, got) {
		t.Fatalf("round trip changed records: %+v -> %+v", got, back)
	}
}

func sameRecords(a, b []UserRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].PartitionKey != b[i].PartitionKey || a[i].ExplicitHashKey != b[i].ExplicitHashKey ||
			!bytes.Equal(a[i].Data, b[i].Data) || a[i].SubSequenceNumber != b[i].SubSequenceNumber {
			return false
		}
	}
	return true
}
