package funcprocessor_test

import (
	"context"
	"fmt"

	"github.com/kinactor/kinactor/examples/funcprocessor"
	"github.com/kinactor/kinactor/messages"
)

// The function is driven here directly with a batch, as a shard actor would.
// The second delivery of the same batch (a redelivery after a failure, say)
// shows up as duplicates.
func Example() {
	counter, fn := funcprocessor.New()
	batch := messages.Batch{
		ShardID: "shardId-000000000000",
		BatchID: 1,
		Records: []messages.Record{
			{SequenceNumber: "100", PartitionKey: "k1", Data: []byte(`{"pk":"k1","n":1}`)},
			{SequenceNumber: "101", PartitionKey: "k2", Data: []byte(`{"pk":"k2","n":1}`)},
			{SequenceNumber: "102", PartitionKey: "k1", Data: []byte(`{"pk":"k1","n":2}`)},
		},
	}
	_ = fn(context.Background(), batch)
	_ = fn(context.Background(), batch)

	for _, s := range counter.Shards() {
		fmt.Println(s.ShardID, s.Records, s.FirstSeq, s.LastSeq)
	}
	fmt.Println("total", counter.Total(), "unique", counter.Unique(), "duplicates", counter.Duplicates())
	fmt.Println("k1", counter.Keys()["k1"])
	// Output:
	// shardId-000000000000 6 100 102
	// total 6 unique 3 duplicates 3
	// k1 4
}
