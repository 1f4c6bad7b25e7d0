package engine

import (
	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/kpl"
)

// deaggregate replaces every KPL aggregated record of the batch by its user
// records, each with the Kinesis sequence number and its own sub-sequence
// number. User records whose hash key falls outside the shard's range
// [start, end] are dropped, as the Java KCL does after a reshard (another
// shard carries them). A record that only looks aggregated (bad digest, bad
// protobuf) is delivered whole and counted, never dropped.
func deaggregate(b stream.Batch, start, end string, m *metrics.Metrics) stream.Batch {
	agg := false
	for _, r := range b.Records {
		if kpl.IsAggregated(r.Data) {
			agg = true
			break
		}
	}
	if !agg {
		return b
	}
	out := make([]stream.Record, 0, len(b.Records)*4)
	for _, r := range b.Records {
		if !kpl.IsAggregated(r.Data) {
			out = append(out, r)
			continue
		}
		users, err := kpl.Deaggregate(r.Data)
		if err != nil {
			m.KPLRecords.WithLabelValues("malformed").Inc()
			out = append(out, r)
			continue
		}
		for _, u := range users {
			if start != "" && end != "" && !kpl.InRange(kpl.EffectiveHashKey(u), start, end) {
				m.KPLRecords.WithLabelValues("out_of_range").Inc()
				continue
			}
			m.KPLRecords.WithLabelValues("user_record").Inc()
			out = append(out, stream.Record{
				SequenceNumber:              r.SequenceNumber,
				SubSequenceNumber:           u.SubSequenceNumber,
				PartitionKey:                u.PartitionKey,
				Data:                        u.Data,
				ApproximateArrivalTimestamp: r.ApproximateArrivalTimestamp,
			})
		}
	}
	b.Records = out
	return b
}
