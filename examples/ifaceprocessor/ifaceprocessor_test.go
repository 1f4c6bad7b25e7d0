package ifaceprocessor_test

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/examples/ifaceprocessor"
	"github.com/kinactor/kinactor/messages"
)

// The processor as a node runs it: behind actors.FromProcessor, on an
// actor system, answering the protocol of package messages.
func TestProcessorBehindTheAdapter(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	sink := ifaceprocessor.NewSink()
	pid := sys.Root.Spawn(actors.FromProcessor(ifaceprocessor.New(sink)))
	defer sys.Root.Stop(pid)
	const shard = "shardId-000000000001"

	sys.Root.Send(pid, messages.Initialized{ShardID: shard, StartingCheckpoint: "TRIM_HORIZON"})
	batch := messages.Batch{
		ShardID: shard,
		BatchID: 7,
		Records: []messages.Record{{SequenceNumber: "1", PartitionKey: "k1"}, {SequenceNumber: "2", PartitionKey: "k2"}},
		Attempt: 1,
	}
	for range 2 { // the second delivery makes two duplicates
		res, err := sys.Root.RequestFuture(pid, batch, 5*time.Second).Result()
		if err != nil {
			t.Fatalf("Batch: %v", err)
		}
		if p, ok := res.(messages.Processed); !ok || p.BatchID != 7 || p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
			t.Fatalf("Batch: reply %T %+v, want Processed for batch 7 at batch end", res, res)
		}
	}
	res, err := sys.Root.RequestFuture(pid, messages.ShutdownRequested{ShardID: shard}, 5*time.Second).Result()
	if err != nil {
		t.Fatalf("ShutdownRequested: %v", err)
	}
	if ack, ok := res.(messages.ShutdownAck); !ok || ack.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("ShutdownRequested: reply %T %+v, want ShutdownAck at batch end", res, res)
	}
	sys.Root.Send(pid, messages.ShardEnded{ShardID: shard})
	sys.Root.Send(pid, messages.LeaseLost{ShardID: shard})
	// Mailbox order: a Touch after them is answered once they are handled.
	if _, err := sys.Root.RequestFuture(pid, &actor.Touch{}, 5*time.Second).Result(); err != nil {
		t.Fatalf("Touch: %v", err)
	}

	if got := sink.Total(); got != 4 {
		t.Errorf("Total = %d, want 4", got)
	}
	if got := sink.Duplicates(); got != 2 {
		t.Errorf("Duplicates = %d, want 2", got)
	}
	if got := sink.PerShard()[shard]; got != 4 {
		t.Errorf("PerShard[%s] = %d, want 4", shard, got)
	}
	if got := sink.Starts(); len(got) != 1 || got[0] != shard+"@TRIM_HORIZON" {
		t.Errorf("Starts = %v", got)
	}
	if got := sink.Ended(); len(got) != 1 || got[0] != shard {
		t.Errorf("Ended = %v, want [%s]", got, shard)
	}
	if got := sink.Lost(); len(got) != 1 || got[0] != shard {
		t.Errorf("Lost = %v, want [%s]", got, shard)
	}
}
