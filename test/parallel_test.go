package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/lease"
	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// checkpointSample is the lease table's checkpoints and, read after them,
// the ledger's records: every record at or before a checkpoint must be in
// the ledger already.
type checkpointSample struct {
	at          time.Time
	checkpoints map[string]lease.Checkpoint
	inLedger    map[string]map[string]bool // shard -> seq -> processed
}

// TestParallelizationFactor8 runs real `kinactor node` processes with
// --parallelization 8 (and a slow ledger, so that the workers overlap) on a
// 4-shard stream with 64 keys: every record processed, per-key order held,
// and no checkpoint ever ahead of a record that was not processed, through
// a graceful handoff (a second node joins: 0 duplicates) and a SIGKILL of
// the owner of every shard.
func TestParallelizationFactor8(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	const streamName, app, shards = "parallel8", "parallel8", 4
	localaws.CreateStreamT(t, kc, streamName, shards)
	c, err := clusterrun.Start(ctx, clusterrun.Options{
		Bin: bin, Dir: dir, App: app, Stream: streamName, Nodes: 1,
		Env: []string{
			"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		},
		ExtraArgs: []string{"--parallelization", "8", "--record-delay", "2ms", "--checkpoint-interval", "500ms"},
	})
	requireNoError(t, err, "starting the cluster")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(3000))
			}
		}
	})
	_, err = c.WaitBalanced(ctx, shards, 30*time.Second)
	requireNoError(t, err, "first node")
	store := lease.NewDynamoStore(env.DynamoDBClient(), app)

	var samples []checkpointSample
	sample := func() {
		t.Helper()
		ls, err := store.List(ctx)
		requireNoError(t, err, "reading the lease table")
		s := checkpointSample{at: time.Now(), checkpoints: map[string]lease.Checkpoint{}, inLedger: map[string]map[string]bool{}}
		for _, l := range ls {
			s.checkpoints[l.Key] = l.Checkpoint
		}
		es, err := kledger.ReadDir(c.LedgerDir())
		requireNoError(t, err, "reading the ledgers")
		for _, e := range es {
			if s.inLedger[e.Shard] == nil {
				s.inLedger[e.Shard] = map[string]bool{}
			}
			s.inLedger[e.Shard][e.Seq] = true
		}
		samples = append(samples, s)
	}
	// sampleWhile samples every 200 ms until cond holds.
	sampleWhile := func(what string, limit time.Duration, cond func() error) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			sample()
			err := cond()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(200 * time.Millisecond) // the sampling period, not a wait for the condition
		}
	}
	prod := clusterrun.StartProducer(kc, streamName, 64, 100)
	t.Cleanup(func() { _, _ = prod.Stop() })
	waitRecords := func(n int) func() error {
		_, base := prod.Produced()
		return func() error {
			if _, total := prod.Produced(); total < base+n {
				return fmt.Errorf("%d of %d records produced", total-base, n)
			}
			return nil
		}
	}
	sampleWhile("records before the handoff", 30*time.Second, waitRecords(300))

	// A graceful handoff: a second node joins and takes half the shards.
	second, err := c.AddNode(ctx)
	requireNoError(t, err, "adding a node")
	sampleWhile("balanced over 2 nodes", 60*time.Second, func() error {
		owners, err := c.Owners(ctx)
		if err != nil {
			return err
		}
		for _, s := range owners {
			if len(s) == 0 {
				return fmt.Errorf("owners %v", owners)
			}
		}
		st, err := c.Status(ctx, second)
		if err != nil {
			return err
		}
		if len(st.Shards) != shards/2 {
			return fmt.Errorf("the new node owns %d shards", len(st.Shards))
		}
		return nil
	})
	sampleWhile("records after the handoff", 30*time.Second, waitRecords(300))
	producedBefore, beforeKill := prod.Produced()
	var repHandoff clusterrun.Report
	sampleWhile("the records before the kill processed", 30*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		repHandoff = clusterrun.Analyze(es, producedBefore, c.Events())
		if repHandoff.Lost > 0 {
			return fmt.Errorf("%d of %d not processed yet", repHandoff.Lost, repHandoff.Produced)
		}
		return nil
	})
	t.Logf("before the kill: %d records, %d processed, %d duplicates", repHandoff.Produced, repHandoff.Processed, repHandoff.Duplicates)
	if repHandoff.Duplicates > 0 {
		t.Errorf("%d duplicates through a graceful handoff with --parallelization 8, want 0", repHandoff.Duplicates)
	}

	// SIGKILL the first node; the second takes its shards.
	requireNoError(t, c.Kill(c.Nodes()[0]), "kill")
	sampleWhile("the survivor owns every shard", 60*time.Second, func() error {
		st, err := c.Status(ctx, second)
		if err != nil {
			return err
		}
		if len(st.Shards) != shards {
			return fmt.Errorf("the survivor owns %d shards", len(st.Shards))
		}
		return nil
	})
	sampleWhile("records after the kill", 30*time.Second, waitRecords(300))
	produced, err := prod.Stop()
	requireNoError(t, err, "producer")
	var rep clusterrun.Report
	sampleWhile("every record processed", 60*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		rep = clusterrun.Analyze(es, produced, c.Events())
		if rep.Lost > 0 {
			return fmt.Errorf("%d of %d records not in any ledger yet, e.g. %v", rep.Lost, rep.Produced, rep.LostSamples)
		}
		return nil
	})
	t.Logf("report (%d produced before the kill):\n%s", beforeKill, rep)
	if rep.OrderViolations > 0 {
		t.Errorf("per-key order violated: %v", rep.OrderSamples)
	}
	if rep.Unexpected > 0 || rep.Unparsed > 0 {
		t.Errorf("%d unexpected records, %d unparsable ledger lines", rep.Unexpected, rep.Unparsed)
	}

	// No checkpoint was ever ahead of a record not yet processed.
	stream := readStream(t, kc, streamName)
	checked, ahead := 0, 0
	for _, s := range samples {
		for shard, cp := range s.checkpoints {
			if cp.IsSentinel() {
				continue
			}
			for _, r := range stream[shard] {
				if (lease.Checkpoint{SequenceNumber: r}).Compare(cp) > 0 {
					break
				}
				checked++
				if !s.inLedger[shard][r] {
					ahead++
					if ahead <= 5 {
						t.Errorf("at %s the checkpoint of %s was %s, but record %s was not processed yet", s.at.Format(time.RFC3339Nano), shard, cp.SequenceNumber, r)
					}
				}
			}
		}
	}
	t.Logf("%d samples, %d record-checkpoint pairs checked, %d ahead", len(samples), checked, ahead)
	if checked == 0 {
		t.Fatal("no checkpoint covered any record: nothing was checked")
	}
	requireNoError(t, c.Term(second), "graceful stop")
}

// readStream returns every record's sequence number, per shard, in order.
func readStream(t *testing.T, kc *kinesis.Client, streamName string) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := map[string][]string{}
	ls, err := kc.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(streamName)})
	requireNoError(t, err, "ListShards")
	for _, sh := range ls.Shards {
		it, err := kc.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{StreamName: aws.String(streamName), ShardId: sh.ShardId, ShardIteratorType: ktypes.ShardIteratorTypeTrimHorizon})
		requireNoError(t, err, "GetShardIterator")
		iter := it.ShardIterator
		for iter != nil {
			gr, err := kc.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(10000)})
			requireNoError(t, err, "GetRecords")
			for _, r := range gr.Records {
				out[*sh.ShardId] = append(out[*sh.ShardId], *r.SequenceNumber)
			}
			if len(gr.Records) == 0 && aws.ToInt64(gr.MillisBehindLatest) == 0 {
				break
			}
			iter = gr.NextShardIterator
		}
	}
	return out
}
