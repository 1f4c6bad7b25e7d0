package actorprocessor_test

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kinactor/kinactor/examples/actorprocessor"
	"github.com/kinactor/kinactor/messages"
)

func TestProcessorReplies(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	sink := actorprocessor.NewSink()
	pid := sys.Root.Spawn(actorprocessor.Props(sink))
	defer sys.Root.Stop(pid)

	sys.Root.Send(pid, messages.Initialized{ShardID: "shardId-000000000001", StartingCheckpoint: "TRIM_HORIZON"})
	batch := messages.Batch{
		ShardID: "shardId-000000000001",
		BatchID: 7,
		Records: []messages.Record{
			{SequenceNumber: "1", PartitionKey: "k1"},
			{SequenceNumber: "2", PartitionKey: "k2"},
		},
		Attempt: 1,
	}
	for i := 0; i < 2; i++ { // the second delivery makes two duplicates
		res, err := sys.Root.RequestFuture(pid, batch, 5*time.Second).Result()
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		p, ok := res.(messages.Processed)
		if !ok {
			t.Fatalf("Records: reply %T %v, want messages.Processed", res, res)
		}
		if p.BatchID != 7 || p.Err != nil || p.Checkpoint.Mode != messages.AtBatchEnd {
			t.Fatalf("Records: reply %+v, want BatchID 7, no error, checkpoint at batch end", p)
		}
	}

	res, err := sys.Root.RequestFuture(pid, messages.ShutdownRequested{ShardID: batch.ShardID}, 5*time.Second).Result()
	if err != nil {
		t.Fatalf("ShutdownRequested: %v", err)
	}
	if ack, ok := res.(messages.ShutdownAck); !ok || ack.Checkpoint.Mode != messages.AtBatchEnd {
		t.Fatalf("ShutdownRequested: reply %T %+v, want ShutdownAck at batch end", res, res)
	}

	sys.Root.Send(pid, messages.ShardEnded{ShardID: batch.ShardID})
	// Mailbox order: a request after ShardEnded is answered after it is handled.
	if _, err := sys.Root.RequestFuture(pid, messages.Batch{ShardID: batch.ShardID, BatchID: 8}, 5*time.Second).Result(); err != nil {
		t.Fatalf("empty Records: %v", err)
	}

	if got := sink.Total(); got != 4 {
		t.Errorf("Total = %d, want 4", got)
	}
	if got := sink.Duplicates(); got != 2 {
		t.Errorf("Duplicates = %d, want 2", got)
	}
	if got := sink.PerKey()["k1"]; got != 2 {
		t.Errorf("PerKey[k1] = %d, want 2", got)
	}
	if got := sink.Ended(); len(got) != 1 || got[0] != batch.ShardID {
		t.Errorf("Ended = %v, want [%s]", got, batch.ShardID)
	}
}
