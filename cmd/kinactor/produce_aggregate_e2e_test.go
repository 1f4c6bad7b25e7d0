package main

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/kpl"
)

// produce --aggregate N writes KPL aggregates that de-aggregate into exactly
// the records a plain produce writes: every key's n = 1..per, in order.
func TestProduceAggregateRoundTrip(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, "")
	setAWSEnv(t, env)
	const keys, per = 4, 50
	if err := runProduce(context.Background(), []string{"--stream", "agg-stream", "--records", fmt.Sprint(keys * per),
		"--keys", fmt.Sprint(keys), "--shards", "2", "--aggregate", "7"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("produce --aggregate: %v", err)
	}
	raw := readStream(t, env.KinesisClient(), "agg-stream")
	users := map[string][][]byte{}
	kinesisRecords := 0
	for shard, ds := range raw {
		for _, d := range ds {
			kinesisRecords++
			if !kpl.IsAggregated(d) {
				t.Fatalf("%s: a record that is not a KPL aggregate: %q", shard, d)
			}
			us, err := kpl.Deaggregate(d)
			if err != nil {
				t.Fatalf("%s: %v", shard, err)
			}
			for _, u := range us {
				users[shard] = append(users[shard], u.Data)
			}
		}
	}
	checkSequences(t, users, keys, per)
	if kinesisRecords >= keys*per/2 {
		t.Fatalf("%d Kinesis records for %d user records: not aggregated", kinesisRecords, keys*per)
	}
	t.Logf("%d user records in %d KPL aggregates", keys*per, kinesisRecords)
}
