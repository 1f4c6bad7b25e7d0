// Package test holds kinactor's integration tests: real nodes against real
// local servers (kinesalite, kinesis-mock, DynamoDB Local, dynalite) that
// the tests start and stop themselves.
package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	ktypes "github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
	"github.com/kinactor/kinactor/messages"
)

// checkFor polls f every 50ms until it returns nil or the deadline passes.
func checkFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", total, err)
		}
		<-tick.C
	}
}

func requireNoError(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// producer writes records {"pk":"kN","n":M} with n counting up per key.
type producer struct {
	kc     *kinesis.Client
	stream string
	keys   int
	mu     sync.Mutex
	next   map[string]int
	total  int
}

func newProducer(kc *kinesis.Client, stream string, keys int) *producer {
	return &producer{kc: kc, stream: stream, keys: keys, next: map[string]int{}}
}

// put writes n records in PutRecords batches of up to 500, retrying the
// records a batch reports as failed, in order per key.
func (p *producer) put(t testing.TB, n int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for n > 0 {
		b := min(n, 500)
		var entries []ktypes.PutRecordsRequestEntry
		for i := 0; i < b; i++ {
			pk := fmt.Sprintf("k%d", (p.total+i)%p.keys)
			p.next[pk]++
			entries = append(entries, ktypes.PutRecordsRequestEntry{
				PartitionKey: aws.String(pk),
				Data:         []byte(fmt.Sprintf(`{"pk":%q,"n":%d}`, pk, p.next[pk])),
			})
		}
		out, err := p.kc.PutRecords(context.Background(), &kinesis.PutRecordsInput{StreamName: aws.String(p.stream), Records: entries})
		requireNoError(t, err, "PutRecords")
		if c := aws.ToInt32(out.FailedRecordCount); c > 0 {
			t.Fatalf("PutRecords: %d records failed", c)
		}
		p.total += b
		n -= b
	}
}

func (p *producer) produced() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// ledger records what processors processed, across nodes.
type ledger struct {
	mu         sync.Mutex
	count      map[string]int // "shard/seq" → times processed
	byShard    map[string][]string
	byKey      map[string][]int // pk → n in processing order (first time only)
	deliveries int
	total      int
}

func newLedger() *ledger {
	return &ledger{count: map[string]int{}, byShard: map[string][]string{}, byKey: map[string][]int{}}
}

func (l *ledger) record(batch messages.Batch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range batch.Records {
		k := fmt.Sprintf("%s/%s/%d", batch.ShardID, r.SequenceNumber, r.SubSequenceNumber)
		l.count[k]++
		l.total++
		l.byShard[batch.ShardID] = append(l.byShard[batch.ShardID], fmt.Sprintf("%s/%06d", r.SequenceNumber, r.SubSequenceNumber))
		if l.count[k] == 1 {
			var pk string
			var n int
			if _, err := fmt.Sscanf(string(r.Data), `{"pk":%q,"n":%d}`, &pk, &n); err == nil {
				l.byKey[pk] = append(l.byKey[pk], n)
			}
		}
	}
}

func (l *ledger) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.count)
}

func (l *ledger) processed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// verify checks every record exactly once and in order per shard and key.
func (l *ledger) verify(t *testing.T, produced int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.count) != produced {
		t.Errorf("processed %d distinct records, produced %d", len(l.count), produced)
	}
	var dups []string
	for k, c := range l.count {
		if c != 1 {
			dups = append(dups, fmt.Sprintf("%s×%d", k, c))
		}
	}
	sort.Strings(dups)
	if len(dups) > 0 {
		t.Errorf("%d records processed more than once, e.g. %v", len(dups), dups[:min(5, len(dups))])
	}
	for shard, seqs := range l.byShard {
		for i := 1; i < len(seqs); i++ {
			if cmpSeq(seqs[i-1], seqs[i]) >= 0 {
				t.Errorf("shard %s: record %s processed after %s", shard, seqs[i], seqs[i-1])
				break
			}
		}
	}
	for pk, ns := range l.byKey {
		for i := 1; i < len(ns); i++ {
			if ns[i] <= ns[i-1] {
				t.Errorf("key %s: n=%d first processed after n=%d", pk, ns[i], ns[i-1])
				break
			}
		}
	}
}

// testLogger writes node logs to the test log at WARN (INFO with -v and
// KINACTOR_TEST_LOG set).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("KINACTOR_TEST_LOG") {
	case "":
	case "debug":
		level = slog.LevelDebug
	default:
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// nodeConfig is a config for a test node on env with short intervals.
func nodeConfig(t *testing.T, env *localaws.Env, streamName, app, worker string) kinactor.Config {
	return kinactor.Config{
		StreamName:           streamName,
		ApplicationName:      app,
		WorkerID:             worker,
		InitialPosition:      kinactor.TrimHorizon,
		IdleTimeBetweenReads: 200 * time.Millisecond,
		ParentPollInterval:   200 * time.Millisecond,
		ShardSyncInterval:    time.Second,
		CheckpointInterval:   500 * time.Millisecond,
		Logger:               testLogger(t),
		Kinesis:              env.KinesisClient(),
		DynamoDB:             env.DynamoDBClient(),
	}
}

// cmpSeq orders the ledger's "sequence/sub" positions (lease.Checkpoint.Compare).
func cmpSeq(a, b string) int {
	pos := func(s string) lease.Checkpoint {
		seq, sub, _ := strings.Cut(s, "/")
		n, _ := strconv.ParseInt(sub, 10, 64)
		return lease.Checkpoint{SequenceNumber: seq, SubSequenceNumber: n}
	}
	return pos(a).Compare(pos(b))
}

// buildWithServers builds the kinactor binary into dir while the local
// servers start (both take seconds), and returns the binary and the
// servers (stopped when the test ends).
func buildWithServers(t testing.TB, dir string, kinesis, dynamo localaws.Kind) (string, *localaws.Env) {
	t.Helper()
	localaws.SkipShort(t) // builds and starts node processes
	type built struct {
		bin string
		err error
	}
	bch := make(chan built, 1)
	go func() {
		bin, err := clusterrun.Build(context.Background(), dir)
		bch <- built{bin, err}
	}()
	env := localaws.StartT(t, kinesis, dynamo)
	b := <-bch
	requireNoError(t, b.err, "build")
	return b.bin, env
}
