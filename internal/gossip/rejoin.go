package gossip

import (
	"sort"
	"time"
)

// Healing a partition.
//
// memberlist does not merge the two halves of a healed partition by
// itself: each half holds the other's members dead, and an alive message
// at the incarnation a member was declared dead with is dropped as stale.
// A member comes back only once it hears that it was declared dead and
// refutes it with a higher incarnation, and it hears that only from a
// state exchange (push-pull) with a member that holds it dead, or from a
// dead or suspect message that memberlist stopped retransmitting long ago.
// Periodic push-pull (every 30 s) heals eventually; the rejoin loop makes
// it fast:
//
//   - Every RejoinInterval it joins (one push-pull each) the seeds not seen
//     alive, for as long as the node runs, so the halves find each other.
//   - It also joins the members this node declared dead in the last
//     rejoinDeadWindow, until they are seen alive again: the push-pull
//     tells each that it was declared dead, so it refutes, and its refutation
//     reaches this side. Without this a non-seed member of the other half
//     stays dead here until memberlist reaps it (GossipToTheDeadTime, 30 s)
//     and a later push-pull brings it as new. A member that really crashed
//     costs one refused dial per RejoinInterval for the window.

// rejoinDeadWindow bounds how long after declaring a member dead the
// rejoin loop dials it: twice memberlist's GossipToTheDeadTime (LAN: 30 s),
// after which memberlist has reaped it and an ordinary push-pull brings it
// back as a new member.
const rejoinDeadWindow = 60 * time.Second

// rejoinTargets is the pure choice of the rejoin loop: the seeds that are
// neither self nor the address of a live member, and, apart, the addresses
// of members declared dead within rejoinDeadWindow before now that are not
// seeds, not self and not live (sorted, without repeats).
func rejoinTargets(seeds []string, self string, live map[string]bool, dead map[string]deathSeen, now time.Time) (seedAddrs, deadAddrs []string) {
	isSeed := map[string]bool{}
	for _, s := range seeds {
		if s == "" || s == self || live[s] || isSeed[s] {
			isSeed[s] = true
			continue
		}
		isSeed[s] = true
		seedAddrs = append(seedAddrs, s)
	}
	picked := map[string]bool{}
	for _, d := range dead {
		a := d.addr
		if a == "" || a == self || live[a] || isSeed[a] || picked[a] || now.Sub(d.at) > rejoinDeadWindow {
			continue
		}
		picked[a] = true
		deadAddrs = append(deadAddrs, a)
	}
	sort.Strings(deadAddrs)
	return seedAddrs, deadAddrs
}

// liveAddrs lists the addresses of the live (alive or suspect) members.
func (m *Membership) liveAddrs() map[string]bool {
	live := map[string]bool{}
	for _, mem := range m.Members() {
		live[mem.Addr] = true
	}
	return live
}

// seedsToJoin lists the seeds that are not ourselves and not the address
// of a member currently seen (alive or suspect).
func (m *Membership) seedsToJoin() []string {
	seeds, _ := rejoinTargets(m.cfg.Seeds, m.Addr(), m.liveAddrs(), nil, time.Now())
	return seeds
}

// rejoinLoop joins, every RejoinInterval, the seeds and the recently
// declared dead members that are not seen alive (see above).
func (m *Membership) rejoinLoop() {
	t := time.NewTicker(m.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case <-t.C:
		}
		m.memMu.Lock()
		dead := make(map[string]deathSeen, len(m.declaredDead))
		for n, d := range m.declaredDead {
			dead[n] = d
		}
		m.memMu.Unlock()
		seeds, deadAddrs := rejoinTargets(m.cfg.Seeds, m.Addr(), m.liveAddrs(), dead, time.Now())
		// Seeds first and apart, so that dials to crashed members never
		// delay finding the other half.
		for _, group := range [][]string{seeds, deadAddrs} {
			if len(group) == 0 {
				continue
			}
			n, err := m.ml.Load().Join(group)
			select {
			case <-m.done:
				return
			default:
			}
			m.log.Debug("rejoin", "addrs", group, "joined", n, "err", err)
		}
	}
}
