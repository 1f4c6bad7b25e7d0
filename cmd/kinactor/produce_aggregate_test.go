package main

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/kpl"
)

func TestAggregateEntries(t *testing.T) {
	var entries []types.PutRecordsRequestEntry
	for i := range 7 {
		e := types.PutRecordsRequestEntry{PartitionKey: aws.String(fmt.Sprintf("k%d", i%3)), Data: fmt.Appendf(nil, "d%d", i)}
		if i == 4 {
			e.ExplicitHashKey = aws.String("12345")
		}
		entries = append(entries, e)
	}
	out, err := aggregateEntries(entries, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 {
		t.Fatalf("got %d aggregated records, want 3 (3+3+1)", len(out))
	}
	next := 0
	for g, agg := range out {
		if want := aws.ToString(entries[g*3].PartitionKey); aws.ToString(agg.PartitionKey) != want {
			t.Errorf("aggregate %d: partition key %q, want the group's first %q", g, aws.ToString(agg.PartitionKey), want)
		}
		if agg.ExplicitHashKey != nil {
			t.Errorf("aggregate %d: ExplicitHashKey set", g)
		}
		if !kpl.IsAggregated(agg.Data) {
			t.Fatalf("aggregate %d: not a KPL record", g)
		}
		recs, err := kpl.Deaggregate(agg.Data)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			e := entries[next]
			next++
			if r.PartitionKey != aws.ToString(e.PartitionKey) || r.ExplicitHashKey != aws.ToString(e.ExplicitHashKey) || !bytes.Equal(r.Data, e.Data) || r.SubSequenceNumber != int64(i) {
				t.Errorf("aggregate %d record %d: %+v, want entry %d", g, i, r, next-1)
			}
		}
	}
	if next != len(entries) {
		t.Fatalf("%d user records in the aggregates, want %d", next, len(entries))
	}

	if _, err := aggregateEntries(entries, 0); err == nil {
		t.Error("n = 0 accepted")
	}
	if _, err := aggregateEntries([]types.PutRecordsRequestEntry{{Data: []byte("x")}}, 2); err == nil {
		t.Error("entry without partition key accepted")
	}
	big := []types.PutRecordsRequestEntry{
		{PartitionKey: aws.String("a"), Data: make([]byte, 600<<10)},
		{PartitionKey: aws.String("b"), Data: make([]byte, 600<<10)},
	}
	if _, err := aggregateEntries(big, 2); err == nil {
		t.Error("aggregate over 1 MiB accepted")
	}
	if out, err := aggregateEntries(big, 1); err != nil || len(out) != 2 {
		t.Errorf("two single-record aggregates: %d, %v", len(out), err)
	}
	if out, err := aggregateEntries(nil, 5); err != nil || len(out) != 0 {
		t.Errorf("no entries: %v, %v", out, err)
	}
}
