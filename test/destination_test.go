package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"

	"github.com/kinactor/kinactor/internal/failure"
	"github.com/kinactor/kinactor/internal/lease"
	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// putKeys writes one record per key, in order, to a 1-shard stream.
func putKeys(t *testing.T, kc *kinesis.Client, streamName string, keys []string) {
	t.Helper()
	for i, k := range keys {
		_, err := kc.PutRecord(context.Background(), &kinesis.PutRecordInput{StreamName: aws.String(streamName), PartitionKey: aws.String(k), Data: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		requireNoError(t, err, "PutRecord")
	}
}

func readEntries(path string) ([]failure.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var es []failure.Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e failure.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, sc.Err()
}

func startOneNode(t *testing.T, name string, args ...string) (*clusterrun.Cluster, *localaws.Env, *kinesis.Client, *lease.DynamoStore) {
	t.Helper()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.DynamoDBLocal)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, name, 1)
	c, err := clusterrun.Start(context.Background(), clusterrun.Options{
		Bin: bin, Dir: dir, App: name, Stream: name, Nodes: 0,
		Env: []string{
			"AWS_ENDPOINT_URL_KINESIS=" + env.Kinesis.Endpoint,
			"AWS_ENDPOINT_URL_DYNAMODB=" + env.DynamoDB.Endpoint,
			"AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local",
		},
		ExtraArgs: args,
	})
	requireNoError(t, err, "starting")
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(4000))
			}
		}
	})
	return c, env, kc, lease.NewDynamoStore(env.DynamoDBClient(), name)
}

// A failure destination that fails stalls the shard, visibly, instead of
// skipping: nothing is checkpointed past the failed record and nothing
// after it is processed; once the destination works again, the failed
// records are in it and the shard goes on.
func TestFailingDestinationStallsTheShard(t *testing.T) {
	ctx := context.Background()
	failDir := filepath.Join(t.TempDir(), "failed")
	c, _, kc, store := startOneNode(t, "dest-stall",
		"--fail-keys", "bad", "--max-attempts", "2", "--on-failure", "dir:"+failDir,
		"--stall-timeout", "2s", "--process-timeout", "1s", "--checkpoint-interval", "100ms")
	// The shard's file is a directory: every append fails.
	const shard = "shardId-000000000000"
	blocker := filepath.Join(failDir, shard+".jsonl")
	requireNoError(t, os.MkdirAll(blocker, 0o755), "blocking the destination")
	keys := []string{"a", "b", "c", "bad", "d", "e", "bad", "f"}
	putKeys(t, kc, "dest-stall", keys)
	p, err := c.AddNodeWith(ctx, clusterrun.NodeOptions{Single: true})
	requireNoError(t, err, "node")

	checkFor(t, 60*time.Second, func() error {
		st, err := c.Status(ctx, p)
		if err != nil {
			return err
		}
		for _, s := range st.Shards {
			if s.Stalled && s.StallCause == "failure-destination" {
				return nil
			}
		}
		return fmt.Errorf("not stalled on failure-destination: %+v", st.Shards)
	})
	es, err := kledger.ReadDir(c.LedgerDir())
	requireNoError(t, err, "ledger")
	var got []string
	for _, e := range es {
		got = append(got, e.PK)
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("processed %v while the destination fails, want a,b,c (nothing after the first bad record)", got)
	}
	row, err := store.Get(ctx, shard)
	requireNoError(t, err, "lease row")
	if row.Checkpoint.SequenceNumber != es[2].Seq {
		t.Fatalf("checkpoint %v, want the record before the first bad one (%s)", row.Checkpoint, es[2].Seq)
	}

	// The destination works again.
	requireNoError(t, os.Remove(blocker), "unblocking")
	checkFor(t, 60*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		var got []string
		for _, e := range es {
			got = append(got, e.PK)
		}
		if strings.Join(got, ",") != "a,b,c,d,e,f" {
			return fmt.Errorf("processed %v", got)
		}
		fe, err := readEntries(blocker)
		if err != nil {
			return err
		}
		if len(fe) != 2 || fe[0].PartitionKey != "bad" || fe[1].PartitionKey != "bad" || fe[0].Attempts != 2 || fe[0].Error == "" {
			return fmt.Errorf("destination holds %+v, want both bad records after 2 attempts", fe)
		}
		st, err := c.Status(ctx, p)
		if err != nil {
			return err
		}
		if len(st.Shards) != 1 || st.Shards[0].Stalled {
			return fmt.Errorf("shards %+v, want it moving again", st.Shards)
		}
		return nil
	})
	requireNoError(t, c.Term(p), "graceful stop")
}

// --max-record-age: records older than the limit are not processed; they
// are in the failure destination (attempts 0) and counted.
func TestMaxRecordAgeSendsOldRecordsToTheDestination(t *testing.T) {
	ctx := context.Background()
	failDir := filepath.Join(t.TempDir(), "failed")
	c, _, kc, _ := startOneNode(t, "record-age",
		"--max-record-age", "2s", "--on-failure", "dir:"+failDir, "--checkpoint-interval", "100ms")
	putKeys(t, kc, "record-age", []string{"old1", "old2", "old3"})
	oldAt := time.Now()
	// Let them age past the limit, then write fresh ones and start.
	<-time.After(time.Until(oldAt.Add(3 * time.Second))) // their age is what is tested, not a condition
	putKeys(t, kc, "record-age", []string{"new1", "new2"})
	p, err := c.AddNodeWith(ctx, clusterrun.NodeOptions{Single: true})
	requireNoError(t, err, "node")
	checkFor(t, 60*time.Second, func() error {
		es, err := kledger.ReadDir(c.LedgerDir())
		if err != nil {
			return err
		}
		var got []string
		for _, e := range es {
			got = append(got, e.PK)
		}
		if strings.Join(got, ",") != "new1,new2" {
			return fmt.Errorf("processed %v, want new1,new2", got)
		}
		fe, err := readEntries(filepath.Join(failDir, "shardId-000000000000.jsonl"))
		if err != nil {
			return err
		}
		var dl []string
		for _, e := range fe {
			if e.Attempts != 0 || !strings.Contains(e.Error, "MaxRecordAge") {
				return fmt.Errorf("entry %+v: want attempts 0 and the age limit named", e)
			}
			dl = append(dl, e.PartitionKey)
		}
		if strings.Join(dl, ",") != "old1,old2,old3" {
			return fmt.Errorf("destination holds %v", dl)
		}
		m, err := c.Metrics(ctx, p)
		if err != nil {
			return err
		}
		if n := m.Sum("kinactor_records_dead_lettered_total", "reason", "expired"); n != 3 {
			return fmt.Errorf("kinactor_records_dead_lettered_total{reason=expired} = %v, want 3", n)
		}
		return nil
	})
	requireNoError(t, c.Term(p), "graceful stop")
}
