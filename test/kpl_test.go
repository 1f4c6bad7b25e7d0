package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/kpl"
	"github.com/kinactor/kinactor/messages"
)

// cutoffProcessor processes user records until it has seen cutoff of them,
// checkpoints at the last one it processed (inside a KPL aggregate), and
// ignores everything after, as a processor would that was stopped there.
type cutoffProcessor struct {
	led    *ledger
	mu     *sync.Mutex
	seen   *int
	cutoff int
}

func (p *cutoffProcessor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case messages.Batch:
		p.mu.Lock()
		var keep []messages.Record
		for _, r := range msg.Records {
			if *p.seen < p.cutoff {
				keep = append(keep, r)
				*p.seen++
			}
		}
		p.mu.Unlock()
		reply := messages.Processed{BatchID: msg.BatchID}
		if len(keep) > 0 {
			part := msg
			part.Records = keep
			p.led.record(part)
			last := keep[len(keep)-1]
			reply.Checkpoint = messages.CheckpointAt(last.SequenceNumber, last.SubSequenceNumber)
		}
		ctx.Respond(reply)
	case messages.ShutdownRequested:
		ctx.Respond(messages.ShutdownAck{}) // keep the checkpoint where it is
	}
}

// KPL aggregates are de-aggregated into user records with sub-sequence
// numbers; a checkpoint inside an aggregate survives a restart: the next
// node resumes at the next user record, with nothing lost or repeated; a
// record that only looks aggregated is delivered whole.
func TestKPLSubSequenceCheckpointAndResume(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const name = "kpl"
	localaws.CreateStreamT(t, kc, name, 1)
	const aggregates, per = 20, 10
	var entries []ktypes.PutRecordsRequestEntry
	for a := 0; a < aggregates; a++ {
		var users []kpl.UserRecord
		for i := 0; i < per; i++ {
			pk := fmt.Sprintf("k%d", i%3)
			users = append(users, kpl.UserRecord{PartitionKey: pk, Data: []byte(fmt.Sprintf(`{"pk":%q,"n":%d}`, pk, a*per+i+1))})
		}
		data, err := kpl.Aggregate(users)
		requireNoError(t, err, "Aggregate")
		entries = append(entries, ktypes.PutRecordsRequestEntry{PartitionKey: aws.String("agg"), Data: data})
	}
	malformed := append(append([]byte{}, kpl.Magic...), []byte("looks aggregated, is not")...)
	entries = append(entries, ktypes.PutRecordsRequestEntry{PartitionKey: aws.String("agg"), Data: malformed})
	out, err := kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
	requireNoError(t, err, "PutRecords")
	if aws.ToInt32(out.FailedRecordCount) != 0 {
		t.Fatal("PutRecords failed records")
	}
	total := aggregates*per + 1

	led := newLedger()
	var mu sync.Mutex
	seen := 0
	const cutoff = 55 // inside the 6th aggregate, at sub-record 4
	cfg := nodeConfig(t, env, name, "kpl-app", "node-k1")
	cfg.MaxRecords = 3 // a few aggregates per batch
	a, err := kinactor.NewNode(cfg, actors.ActorProcessor(func() actor.Actor {
		return &cutoffProcessor{led: led, mu: &mu, seen: &seen, cutoff: cutoff}
	}))
	requireNoError(t, err, "NewNode")
	requireNoError(t, a.Start(context.Background()), "Start")
	checkFor(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if seen < cutoff {
			return fmt.Errorf("processed %d of the first %d", seen, cutoff)
		}
		return nil
	})
	stopNode(t, a)
	store := lease.NewDynamoStore(env.DynamoDBClient(), "kpl-app")
	row, err := store.Get(context.Background(), "shardId-000000000000")
	requireNoError(t, err, "Get")
	if row.Checkpoint.SubSequenceNumber != 4 {
		t.Fatalf("checkpoint %+v: want sub-sequence 4 of the 6th aggregate", row.Checkpoint)
	}

	cfg.WorkerID = "node-k2"
	var first messages.Record
	var once sync.Once
	runNode(t, cfg, func(_ context.Context, b messages.Batch) error {
		once.Do(func() { first = b.Records[0] })
		led.record(b)
		return nil
	})
	checkFor(t, 30*time.Second, func() error {
		if u := led.unique(); u < total {
			return fmt.Errorf("processed %d of %d", u, total)
		}
		return nil
	})
	led.verify(t, total)
	if first.SequenceNumber != row.Checkpoint.SequenceNumber || first.SubSequenceNumber != 5 {
		t.Errorf("the second node started at %s/%d, want %s/5", first.SequenceNumber, first.SubSequenceNumber, row.Checkpoint.SequenceNumber)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	whole := 0
	for k := range led.count {
		if len(k) > 0 && k[len(k)-2:] == "/0" {
			whole++
		}
	}
	if whole < aggregates+1 {
		t.Errorf("%d records at sub-sequence 0, want at least %d (one per aggregate and the malformed one)", whole, aggregates+1)
	}
}
