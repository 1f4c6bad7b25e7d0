package ifaceprocessor_test

import (
	"context"
	"fmt"

	"github.com/kinactor/kinactor/examples/ifaceprocessor"
	"github.com/kinactor/kinactor/messages"
)

// The processor is driven here directly, as the adapter of
// actors.FromProcessor would: Initialize, then batches. The second
// delivery of the same batch (a redelivery after a failure, say) shows up
// as duplicates.
func Example() {
	sink := ifaceprocessor.NewSink()
	newProcessor := ifaceprocessor.New(sink)
	p := newProcessor("shardId-000000000000").(*ifaceprocessor.Processor)
	ctx := context.Background()
	_ = p.Initialize(ctx, messages.Initialized{ShardID: "shardId-000000000000", StartingCheckpoint: "TRIM_HORIZON"})
	batch := messages.Batch{
		ShardID: "shardId-000000000000",
		BatchID: 1,
		Records: []messages.Record{
			{SequenceNumber: "100", PartitionKey: "k1"},
			{SequenceNumber: "101", PartitionKey: "k2"},
		},
	}
	for range 2 {
		res, err := p.ProcessRecords(ctx, batch)
		fmt.Println(res.Checkpoint, err)
	}
	fmt.Println(sink.Starts(), "total", sink.Total(), "duplicates", sink.Duplicates())
	// Output:
	// batch-end <nil>
	// batch-end <nil>
	// [shardId-000000000000@TRIM_HORIZON] total 4 duplicates 2
}
