package test

import (
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/testenv/chaos"
)

// Two applications share gossip seeds and label, each with its own stream
// and lease table, and the same shard ids (shardId-000000000000..3): ours
// (3 nodes) and a stranger (2 nodes, one killed and one started during
// the run, and a voice that keeps saying it released every shard at
// counter 500). One node of ours is stopped (SIGSTOP, 5 s: gossip
// declares it dead, its shards are taken) and, once back and given
// shards again, cut off from DynamoDB: it stays in the view but its lease
// counters stand still, so its shards must be taken by expiry within
// LeaseExpiry + 2 s of the cut. Before messages were checked for their
// application, the stranger's release at 500 made our expiry tracker wait
// for a counter the holder never reaches: those shards never moved.
// Nothing is lost, nothing is delivered on a lost lease beyond the batch in
// flight, and our nodes refused the stranger's messages.
func TestStrangerCannotFoolUs(t *testing.T) {
	s := chaos.Scenario{Nodes: 3, Shards: 4, Rate: 40, Keys: 16, Duration: chaos.Duration(90 * time.Second), Seed: 1,
		Drain: chaos.Duration(90 * time.Second), NodeArgs: impairNodeArgs, Faults: []chaos.Fault{
			{At: chaos.Duration(2 * time.Second), Kind: chaos.Stranger, For: chaos.Duration(80 * time.Second)},
			{At: chaos.Duration(12 * time.Second), Kind: chaos.Pause, Node: "n2", For: chaos.Duration(5 * time.Second)},
			{At: chaos.Duration(35 * time.Second), Kind: chaos.Cut, Node: "n2", Target: "dynamodb", For: chaos.Duration(35 * time.Second)},
		}}
	rep := runChaos(t, s, 8*time.Minute)
	tm, _ := s.Timings()
	var stranger *chaos.Done
	for i, d := range rep.Faults {
		if d.Kind == chaos.Stranger {
			stranger = &rep.Faults[i]
		}
	}
	if stranger == nil {
		t.Fatal("no stranger fault in the report")
	}
	if stranger.Problem != "" {
		t.Errorf("stranger: %s", stranger.Problem)
	}
	if stranger.Refused == 0 {
		t.Errorf("our nodes refused none of the stranger's messages: %s", stranger.Detail)
	}
	var cut *chaos.Impair
	for i, im := range rep.Impairs {
		if im.Kind == chaos.Cut {
			cut = &rep.Impairs[i]
		}
		if im.Kind == chaos.Pause {
			for _, s := range im.Lost {
				if n := im.WokeBatches[s]; n > 1 {
					t.Errorf("after the pause %s delivered %d batches on %s, which it had lost", im.Node, n, s)
				}
			}
		}
	}
	if cut == nil || len(cut.Shards) == 0 {
		t.Fatalf("the cut node owned no shards when it was cut: %+v", rep.Impairs)
	}
	if len(cut.NotMoved) > 0 || cut.RecoverySec > (tm.LeaseExpiry+2*time.Second).Seconds() {
		t.Errorf("the cut node's shards %v moved within %.3fs (not moved: %v); want all within LeaseExpiry %s + 2s",
			cut.Shards, cut.RecoverySec, cut.NotMoved, tm.LeaseExpiry)
	}
	checkFlowed(t, rep)
	if !rep.OK {
		t.Errorf("verifier: %v", rep.Failures)
	}
}
