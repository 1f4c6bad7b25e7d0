package actors

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/lease"
	"github.com/kinactor/kinactor/stream"
)

func rows(n int, owner string) []lease.Lease {
	var ls []lease.Lease
	for i := 0; i < n; i++ {
		ls = append(ls, lease.Lease{Key: fmt.Sprintf("shard-%02d", i), Owner: owner, Counter: 1, Checkpoint: lease.Checkpoint{SequenceNumber: "TRIM_HORIZON"}})
	}
	return ls
}

func alive(names ...string) []cluster.Member {
	var ms []cluster.Member
	for _, n := range names {
		ms = append(ms, cluster.Member{Name: n})
	}
	return ms
}

func reasons(p Plan) map[string]string {
	out := map[string]string{}
	for _, t := range p.Takes {
		out[t.Lease.Key] = t.Reason
	}
	return out
}

func TestPlanSingleNodeTakesEverythingEligible(t *testing.T) {
	ls := rows(4, "")
	ls[0].Counter = 0                                                             // never owned
	ls[2].Checkpoint = lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd} // finished
	ls[3].Owner = "me"                                                            // ours, no actor here
	p := PlanOwnership(View{Me: "me", Leases: ls})
	want := map[string]string{"shard-00": TakeFree, "shard-01": TakeReleased, "shard-03": TakeOwn}
	if got := reasons(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("takes %v, want %v", got, want)
	}
}

func TestPlanTakesOnlyWhatIsAssigned(t *testing.T) {
	ls := rows(12, "")
	ms := alive("a", "b", "c")
	assigned := 0
	for _, me := range []string{"a", "b", "c"} {
		p := PlanOwnership(View{Me: me, Leases: ls, Members: ms})
		for _, tk := range p.Takes {
			if p.Assignment[tk.Lease.Key] != me {
				t.Fatalf("%s takes %s assigned to %s", me, tk.Lease.Key, p.Assignment[tk.Lease.Key])
			}
		}
		if len(p.Takes) != 4 {
			t.Fatalf("%s takes %d of 12 shards over 3 members", me, len(p.Takes))
		}
		assigned += len(p.Takes)
	}
	if assigned != 12 {
		t.Fatalf("%d shards taken in all", assigned)
	}
}

func TestPlanOwnerAliveWaitsOwnerGoneTakesAtOnce(t *testing.T) {
	ls := rows(12, "b") // b holds everything
	ms := alive("a", "b")
	p := PlanOwnership(View{Me: "a", Leases: ls, Members: ms, Expired: func(lease.Lease) bool { return false }})
	if len(p.Takes) != 0 {
		t.Fatalf("took %d leases from a live owner; it must hand them off", len(p.Takes))
	}
	// b dies: a takes everything at once
	p = PlanOwnership(View{Me: "a", Leases: ls, Members: alive("a"), Gone: map[string]bool{"b": true}, Expired: func(lease.Lease) bool { return false }})
	if len(p.Takes) != 12 {
		t.Fatalf("took %d of a dead owner's 12 leases", len(p.Takes))
	}
	for _, tk := range p.Takes {
		if tk.Reason != TakeDeadOwner {
			t.Fatalf("reason %s", tk.Reason)
		}
	}
	// an owner gossip never saw (not gone, not alive): only by expiry
	p = PlanOwnership(View{Me: "a", Leases: ls, Members: alive("a"), Expired: func(lease.Lease) bool { return false }})
	if len(p.Takes) != 0 {
		t.Fatalf("took %d leases of an unknown owner before expiry", len(p.Takes))
	}
	p = PlanOwnership(View{Me: "a", Leases: ls, Members: alive("a"), Expired: func(lease.Lease) bool { return true }})
	if len(p.Takes) != 12 || p.Takes[0].Reason != TakeExpired {
		t.Fatalf("expired leases not taken: %v", reasons(p))
	}
}

func TestPlanLostLeaseComesBackOnlyByExpiry(t *testing.T) {
	ls := rows(1, "b")
	v := View{Me: "a", Leases: ls, Members: alive("a"), Gone: map[string]bool{"b": true}, Lost: map[string]bool{"shard-00": true}, Expired: func(lease.Lease) bool { return false }}
	if p := PlanOwnership(v); len(p.Takes) != 0 {
		t.Fatalf("re-took a lease lost to a fenced write: %v", reasons(p))
	}
	v.Expired = func(lease.Lease) bool { return true }
	if p := PlanOwnership(v); len(p.Takes) != 1 {
		t.Fatalf("expired lost lease not taken")
	}
}

func TestPlanReleasesWhatMovedAway(t *testing.T) {
	ls := rows(12, "a")
	running := map[string]bool{}
	for _, l := range ls {
		running[l.Key] = true
	}
	p := PlanOwnership(View{Me: "a", Leases: ls, Members: alive("a", "b", "c"), Running: running})
	if len(p.Releases) != 8 {
		t.Fatalf("a runs 12, keeps %d: releases %v", 12-len(p.Releases), p.Releases)
	}
	for _, k := range p.Releases {
		if p.Assignment[k] == "a" {
			t.Fatalf("released %s which is assigned to a", k)
		}
	}
	// draining: everything goes
	p = PlanOwnership(View{Me: "a", Leases: ls, Members: []cluster.Member{{Name: "a", Meta: cluster.Meta{Draining: true}}, {Name: "b"}}, Running: running})
	if len(p.Releases) != 12 {
		t.Fatalf("a draining node keeps %d shards", 12-len(p.Releases))
	}
}

func TestPlanListingFiltersRows(t *testing.T) {
	ls := rows(3, "")
	p := PlanOwnership(View{Me: "me", Leases: ls, Listed: map[string]bool{"shard-00": true}})
	if got := reasons(p); len(got) != 1 || got["shard-00"] == "" {
		t.Fatalf("takes %v, want only the listed shard", got)
	}
}

func TestFinishedParents(t *testing.T) {
	end := lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}
	ls := []lease.Lease{
		{Key: "p1", Checkpoint: end, ChildShardIDs: []string{"c1", "c2"}},
		{Key: "c1", Checkpoint: lease.Checkpoint{SequenceNumber: "123"}},
		{Key: "c2", Checkpoint: end},
		{Key: "p2", Checkpoint: end, ChildShardIDs: []string{"c3"}},
		{Key: "c3", Checkpoint: lease.Checkpoint{SequenceNumber: lease.CheckpointTrimHorizon}}, // not started
		{Key: "p3", Checkpoint: end, ChildShardIDs: []string{"c4"}},                            // child row missing
		{Key: "p4", Checkpoint: end},                                                           // children unknown
		{Key: "p5", Checkpoint: end, ChildShardIDs: []string{"c1"}, Owner: "x"},                // still held
	}
	got := FinishedParents(ls)
	if len(got) != 1 || got[0].Key != "p1" {
		t.Fatalf("finished parents %v, want only p1", got)
	}
}

func TestNewRows(t *testing.T) {
	closed := func(id string, parents ...string) stream.Shard {
		s := open(id, parents...)
		s.EndingSequenceNumber = "99"
		return s
	}
	// The lineage of a chaos run: 2 split into 20 and 21; 21 merged with 3
	// into 27; 20 merged with 27 into 28. 5 is an untouched open shard.
	shards := []stream.Shard{
		closed("s02"), closed("s03"), open("s05"),
		closed("s20", "s02"), closed("s21", "s02"),
		closed("s27", "s21", "s03"), open("s28", "s20", "s27"),
	}
	keys := func(ls []lease.Lease) map[string]string {
		m := map[string]string{}
		for _, l := range ls {
			m[l.Key] = l.Checkpoint.SequenceNumber
		}
		return m
	}
	t.Run("fresh table: every shard, children from the start", func(t *testing.T) {
		got := keys(NewRows(shards, map[string]lease.Lease{}, lease.CheckpointLatest))
		want := map[string]string{"s02": "LATEST", "s03": "LATEST", "s05": "LATEST",
			"s20": "TRIM_HORIZON", "s21": "TRIM_HORIZON", "s27": "TRIM_HORIZON", "s28": "TRIM_HORIZON"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("rows %v, want %v", got, want)
		}
	})
	t.Run("finished ancestors are not read again", func(t *testing.T) {
		// Every closed shard was read to its end and its row deleted.
		have := map[string]lease.Lease{"s05": {Key: "s05"}, "s28": {Key: "s28"}}
		if got := NewRows(shards, have, lease.CheckpointTrimHorizon); len(got) != 0 {
			t.Fatalf("rows %v, want none", keys(got))
		}
	})
	t.Run("a shard split twice between two syncs", func(t *testing.T) {
		// 5 (has a row) split into 40 and 41; 41 split again into 42
		// and 43 before the discovering node listed the stream.
		more := append(append([]stream.Shard(nil), shards...),
			closed("s40", "s05"), closed("s41", "s05"), open("s42", "s41"), open("s43", "s41"))
		more[2] = closed("s05")
		have := map[string]lease.Lease{"s05": {Key: "s05"}, "s28": {Key: "s28"}}
		got := keys(NewRows(more, have, lease.CheckpointLatest))
		want := map[string]string{"s40": "TRIM_HORIZON", "s41": "TRIM_HORIZON", "s42": "TRIM_HORIZON", "s43": "TRIM_HORIZON"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("rows %v, want %v", got, want)
		}
	})
}

func open(id string, parents ...string) stream.Shard {
	s := stream.Shard{ID: id}
	if len(parents) > 0 {
		s.ParentShardID = parents[0]
	}
	if len(parents) > 1 {
		s.AdjacentParentShardID = parents[1]
	}
	return s
}

func TestSettleLost(t *testing.T) {
	row := func(key, owner string) lease.Lease { return lease.Lease{Key: key, Owner: owner, Counter: 5} }
	t0 := time.UnixMilli(1_000_000)
	lost := map[string]LostLease{
		"a": {At: t0}, "b": {At: t0}, "c": {To: "n3", At: t0}, "d": {To: "n3", At: t0},
		"e": {To: "n3", At: t0}, "f": {To: "n3", At: t0}, "g": {At: t0}, "h": {To: "n4", At: t0},
	}
	joined := map[string]time.Time{
		"n3": t0.Add(-time.Minute), // joined before the losses: no heal since
		"n4": t0.Add(time.Second),  // joined again after the loss: the partition healed
	}
	SettleLost(lost, []lease.Lease{
		row("a", "n3"), // first read after the loss: n3 took it
		row("b", ""),   // released since: free
		row("c", "n3"), // still with the node that took it
		row("d", "n6"), // moved on from n3 to n6: the loss is history
		row("e", "me"), // ours again
		row("x", "n3"), // never lost
		// f: no row in this read (deleted or not listed): keep the mark
		row("g", "n4"), // first read: n4 took it, and has rejoined since
		row("h", "n4"), // n4 has rejoined since
	}, "me", joined)
	want := map[string]LostLease{"a": {To: "n3", At: t0}, "c": {To: "n3", At: t0}, "f": {To: "n3", At: t0}}
	if !reflect.DeepEqual(lost, want) {
		t.Fatalf("lost %v, want %v", lost, want)
	}
}

// A lease lost to n3 that moved on to n6: when n6 dies, it is taken at once
// as a dead owner's, not after LeaseExpiry (the soak's 10 s stall).
func TestPlanTakesFromDeadOwnerAfterTheLossSettled(t *testing.T) {
	ls := []lease.Lease{{Key: "s", Owner: "n6", Counter: 9, Checkpoint: lease.Checkpoint{SequenceNumber: "TRIM_HORIZON"}}}
	lost := map[string]LostLease{"s": {To: "n3"}}
	SettleLost(lost, ls, "me", nil)
	v := View{Me: "me", Leases: ls, Members: alive("me"), Gone: map[string]bool{"n6": true}, Lost: map[string]bool{}}
	for k := range lost {
		v.Lost[k] = true
	}
	if got := reasons(PlanOwnership(v)); got["s"] != TakeDeadOwner {
		t.Fatalf("takes %v, want s from its dead owner", got)
	}
	v.Lost = map[string]bool{"s": true} // still with the node that took it
	if got := reasons(PlanOwnership(v)); got["s"] != "" {
		t.Fatalf("takes %v, want none while the loss stands", got)
	}
}
