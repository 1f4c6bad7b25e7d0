package chaos

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/ledger"
)

// pause-after-take watches a node's log for its takes, as the node writes
// them (slog's text handler, with the worker attribute first).
func TestTakenLineMatchesTheNodesLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n13.log")
	log := `time=2026-12-03T08:16:37.700Z level=INFO msg="node starting" worker=n13 stream=s table=s shards=4
time=2026-12-03T08:16:37.727Z level=INFO msg="lease taken" worker=n13 shard=shardId-000000000012 reason=released counter=264
time=2026-12-03T08:16:37.739Z level=INFO msg="lease taken" worker=n13 shard=shardId-000000000010 reason=released counter=271
time=2026-12-03T08:16:37.740Z level=INFO msg="lease taken" worker=n13 shard=shardId-000000000012 reason=own counter=272
`
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := logMatches(path, takenLine)
	if want := []string{"shardId-000000000012", "shardId-000000000010"}; !slices.Equal(got, want) {
		t.Fatalf("takes %v, want %v", got, want)
	}
}

// After a pause-after-take, a shard whose take was answered while the
// victim slept counts as one it may have lost, and a retake only counts
// once it is awake: deliveries between the pause and the wake on a shard
// another node took meanwhile fail the run beyond the one batch in flight.
func TestPauseAfterTakeChecksTakesAnsweredDuringThePause(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	at, end := t0, t0.Add(14*time.Second)
	d := Done{Kind: PauseAfterTake, Node: "v", At: at, End: end, Shards: []string{"s1"}}
	writes := []Write{
		{At: at.Add(-10 * time.Millisecond), Shard: "s1", Take: true},
		{At: at.Add(200 * time.Millisecond), Shard: "s2", Take: true}, // answered while it slept
	}
	samples := []Sample{
		{At: at.Add(3 * time.Second), Shard: "s1", Owner: "other", Counter: 9, Checkpoint: lease.Checkpoint{SequenceNumber: "1"}},
		{At: at.Add(3 * time.Second), Shard: "s2", Owner: "other", Counter: 9, Checkpoint: lease.Checkpoint{SequenceNumber: "1"}},
	}
	entry := func(shard string, ts time.Time) ledger.Entry {
		return ledger.Entry{Node: "v", Shard: shard, TS: ts.UnixMilli()}
	}
	byShard := map[string][]*ledger.Entry{}
	for _, e := range []ledger.Entry{entry("s2", end.Add(100*time.Millisecond)), entry("s2", end.Add(900*time.Millisecond)), entry("s1", end.Add(100*time.Millisecond))} {
		e := e
		byShard[e.Shard] = append(byShard[e.Shard], &e)
	}
	var r Report
	im := Impair{}
	r.checkPause(Input{Samples: samples}, d, &im, byShard, writes)
	if !slices.Equal(im.Lost, []string{"s1", "s2"}) {
		t.Fatalf("lost %v, want s1 and s2 (s2's take was answered during the pause)", im.Lost)
	}
	if im.WokeBatches["s2"] != 2 || r.PauseExtraBatches != 1 || len(r.Failures) != 1 {
		t.Fatalf("woke batches %v, extra %d, failures %v: want s2's second batch to fail the run", im.WokeBatches, r.PauseExtraBatches, r.Failures)
	}
}
