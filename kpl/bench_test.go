package kpl

import (
	"bytes"
	"strconv"
	"testing"
)

func benchAggregate(b *testing.B, n int) []byte {
	recs := make([]UserRecord, n)
	for i := range recs {
		recs[i] = UserRecord{PartitionKey: "partition-" + strconv.Itoa(i), Data: bytes.Repeat([]byte{byte(i)}, 100)}
	}
	data, err := Aggregate(recs)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkDeaggregate: aggregates of 1, 10 and 100 user records of 100
// bytes, each with its own partition key.
func BenchmarkDeaggregate(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			data := benchAggregate(b, n)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				recs, err := Deaggregate(data)
				if err != nil || len(recs) != n {
					b.Fatal(err, len(recs))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/user-record")
		})
	}
}

// BenchmarkDeaggregateDynamicpb is the same with proto.Unmarshal into a
// dynamicpb message (refDeaggregate), the alternative to the protowire walk.
func BenchmarkDeaggregateDynamicpb(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			data := benchAggregate(b, n)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				recs, err := refDeaggregate(b, data)
				if err != nil || len(recs) != n {
					b.Fatal(err, len(recs))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/user-record")
		})
	}
}

func BenchmarkAggregate(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			recs, err := Deaggregate(benchAggregate(b, n))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Aggregate(recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/user-record")
		})
	}
}
