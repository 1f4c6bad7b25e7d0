package main

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/kpl"
)

// maxKinesisRecord is the most a Kinesis record may hold: data plus
// partition key, 1 MiB.
const maxKinesisRecord = 1 << 20

// aggregateEntries groups every n consecutive entries (the last group may be
// shorter) into one KPL aggregated Kinesis record, in order. The aggregated
// record takes the partition key of its group's first entry and has no
// ExplicitHashKey, so it lands on the shard of that first key; the user
// records inside keep their own partition keys and explicit hash keys.
// n = 1 still wraps each entry in an aggregate of one. It fails on n < 1, an
// entry without a partition key, or an aggregate over the 1 MiB record limit.
func aggregateEntries(entries []types.PutRecordsRequestEntry, n int) ([]types.PutRecordsRequestEntry, error) {
	if n < 1 {
		return nil, fmt.Errorf("aggregate: group size %d, want at least 1", n)
	}
	out := make([]types.PutRecordsRequestEntry, 0, (len(entries)+n-1)/n)
	recs := make([]kpl.UserRecord, 0, min(n, len(entries)))
	for start := 0; start < len(entries); start += n {
		group := entries[start:min(start+n, len(entries))]
		recs = recs[:0]
		for i, e := range group {
			if e.PartitionKey == nil {
				return nil, fmt.Errorf("aggregate: entry %d has no partition key", start+i)
			}
			recs = append(recs, kpl.UserRecord{
				PartitionKey:    *e.PartitionKey,
				ExplicitHashKey: aws.ToString(e.ExplicitHashKey),
				Data:            e.Data,
			})
		}
		data, err := kpl.Aggregate(recs)
		if err != nil {
			return nil, fmt.Errorf("aggregate: entries %d..%d: %w", start, start+len(group)-1, err)
		}
		pk := *group[0].PartitionKey
		if len(data)+len(pk) > maxKinesisRecord {
			return nil, fmt.Errorf("aggregate: entries %d..%d make a %d-byte record, over the 1 MiB limit", start, start+len(group)-1, len(data)+len(pk))
		}
		out = append(out, types.PutRecordsRequestEntry{PartitionKey: aws.String(pk), Data: data})
	}
	return out, nil
}
