package actors

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/lease"
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
