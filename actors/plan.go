package actors

import (
	"sort"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/lease"
)

// Take is a lease the coordinator decided to take, and why.
type Take struct {
	Lease  lease.Lease // as read
	Reason string      // TakeFree, TakeReleased, TakeDeadOwner, TakeExpired or TakeOwn
}

// Reasons for taking a lease (the lease_takes_total label).
const (
	TakeFree      = "free"       // never owned
	TakeReleased  = "released"   // released by its last owner
	TakeDeadOwner = "dead_owner" // its owner left or died in the gossip view
	TakeExpired   = "expired"    // its counter stood still for LeaseExpiry
	TakeOwn       = "own"        // still ours in the table, but no actor runs it here
)

// View is what the coordinator knows when it plans.
type View struct {
	Me     string
	Leases []lease.Lease
	// Listed, when not nil, holds the shard ids the stream listing
	// returned; leases of other shards are ignored. Nil: trust the table.
	Listed map[string]bool
	// Members is the gossip view (alive and suspect members). Nil means
	// no cluster: this node alone.
	Members []cluster.Member
	// Gone holds members gossip saw leave or die.
	Gone map[string]bool
	// Running: shards with an actor on this node (starting, running or
	// stopping); Busy: shards being taken or given up here.
	Running map[string]bool
	Busy    func(string) bool
	// Lost: shards whose lease this node lost to a fenced write, while
	// the node that took it still holds it (SettleLost); they are not
	// taken by judging that owner dead, only by expiry, so two halves of a
	// partition do not steal a lease back and forth.
	Lost map[string]bool
	// Expired judges a lease expired (its counter stood still long enough).
	// It is called once for every lease owned by another node.
	Expired func(lease.Lease) bool
}

// Plan is what the coordinator should do.
type Plan struct {
	Assignment map[string]string // eligible shard → owner
	Takes      []Take            // leases to take, in shard order
	Releases   []string          // running shards assigned elsewhere: hand them off
}

// PlanOwnership decides, purely from v, which leases to take and which
// running shards to hand off. Eligible shards are those with a lease row
// not at SHARD_END (and listed, when a listing is given). They are assigned
// over the live, non-draining members by cluster.Assign. A shard assigned
// to this node is taken when its lease is free or released, still ours, held
// by a member gossip saw leave or die, or expired; a lease held by a live
// member is left for it to release. Running shards assigned elsewhere are
// released gracefully.
func PlanOwnership(v View) Plan {
	var eligible []string
	byKey := make(map[string]lease.Lease, len(v.Leases))
	for _, l := range v.Leases {
		if l.Checkpoint.IsShardEnd() || (v.Listed != nil && !v.Listed[l.Key]) {
			continue
		}
		eligible = append(eligible, l.Key)
		byKey[l.Key] = l
	}
	members := v.Members
	if members == nil {
		members = []cluster.Member{{Name: v.Me}}
	}
	alive := make(map[string]bool, len(members))
	for _, m := range members {
		alive[m.Name] = true
	}
	p := Plan{Assignment: cluster.Assign(eligible, cluster.Candidates(members))}
	for _, key := range eligible {
		l := byKey[key]
		theirs := l.Owner != "" && l.Owner != v.Me
		expired := theirs && v.Expired != nil && v.Expired(l) // observe every foreign lease
		if p.Assignment[key] != v.Me || v.Running[key] || (v.Busy != nil && v.Busy(key)) {
			continue
		}
		switch {
		case l.Owner == "" && l.Counter == 0:
			p.Takes = append(p.Takes, Take{l, TakeFree})
		case l.Owner == "":
			p.Takes = append(p.Takes, Take{l, TakeReleased})
		case l.Owner == v.Me:
			p.Takes = append(p.Takes, Take{l, TakeOwn})
		case expired:
			p.Takes = append(p.Takes, Take{l, TakeExpired})
		case v.Lost[key]:
			// lost to a fenced write: only expiry gives it back
		case v.Gone[l.Owner] && !alive[l.Owner]:
			p.Takes = append(p.Takes, Take{l, TakeDeadOwner})
		}
	}
	for key := range v.Running {
		if owner, ok := p.Assignment[key]; ok && owner != v.Me {
			p.Releases = append(p.Releases, key)
		}
	}
	sort.Strings(p.Releases)
	return p
}
