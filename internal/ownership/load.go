package ownership

import (
	"math"
	"time"
)

// Load-aware assignment (Config.LoadAware).
//
// Each node measures the load of the shards it runs (the shell sends
// LoadSampled every few seconds) and tells every other member of the
// application (MsgLoad, one message per member, a few bytes per shard:
// see LoadBytesPerShard). Every node then assigns with AssignByLoad over
// the same inputs: the holders of the leases (a shard stays where it is:
// that is the hysteresis), the loads heard, and the candidates' capacity
// weights. Shards without a live holder (a member died or left) are placed
// by consistent hashing with bounded loads.
//
// Rebalancing is decided only by the holder, for its own shards, at most
// every RebalanceInterval: when it is over its share by more than
// LoadThreshold at two rebalances in a row, it hands up to LoadMaxMoves
// shards off
// (gracefully, as any handoff) to the least loaded members, and its
// release message names the new owner (Message.To), so that every node
// agrees at once on who takes it. A shard that moved is not moved again
// for LoadCoolDown (each node times it from when it saw the move). A node
// knows its own shards' loads as it last sent them, never fresher, so that
// its inputs are the ones the others have.

// LoadBytesPerShard bounds what one shard adds to a MsgLoad: its id (at
// most 128 bytes, ~20 for Kinesis ids) and its weight in millionths, in
// JSON: {"s":"shardId-000000000001","w":123456} is 37 bytes with the comma.
const LoadBytesPerShard = 40

// ShardWeight is one shard's load in a MsgLoad: W is Load.Weight in
// millionths (integers keep the message short and every node's input
// identical).
type ShardWeight struct {
	Shard string `json:"s"`
	W     int64  `json:"w"`
}

// LoadSampled carries the measured load weights of this node's running
// shards (only those measured).
type LoadSampled struct {
	Loads map[string]float64
}

// pendingMove is a handoff decided for load, until the new owner holds the
// lease (or gives up on it).
type pendingMove struct {
	to string
	at time.Time
}

func (LoadSampled) isEvent() {}

// onLoadSampled records this node's loads and sends them to the others.
func (m *Machine) onLoadSampled(now time.Time, e LoadSampled, out *effects) {
	if !m.cfg.LoadAware {
		return
	}
	var ws []ShardWeight
	for _, k := range sortedKeys(e.Loads) {
		if m.run[k] == nil {
			continue
		}
		w := int64(math.Round(max(0, e.Loads[k]) * 1e6))
		if old, ok := m.loads[k]; !ok || old != w {
			m.loads[k] = w
			m.assignDirty = true
		}
		ws = append(ws, ShardWeight{Shard: k, W: w})
	}
	if len(ws) == 0 || !m.cfg.Clustered {
		return
	}
	for _, c := range m.candidates() {
		if c.name != m.cfg.Me {
			out.add(Send{To: c.name, Msg: Message{App: m.cfg.App, Type: MsgLoad, Loads: ws}})
		}
	}
}

// hearLoad keeps the loads a holder sent of its shards.
func (m *Machine) hearLoad(from string, ws []ShardWeight) {
	for _, w := range ws {
		if l, ok := m.leases[w.Shard]; ok && l.Owner != "" && l.Owner != from {
			continue // not (or no longer) the holder's to say
		}
		if old, ok := m.loads[w.Shard]; !ok || old != w.W {
			m.loads[w.Shard] = max(0, w.W)
			m.assignDirty = true
		}
	}
}

// loadAssign is the load-aware assignment over cands (see above), with
// the moves this node decided now (as pending handoffs of its own shards).
func (m *Machine) loadAssign(keys []string, cands []Candidate, me string, rebalance bool) map[string]string {
	in := LoadInput{Members: cands, Current: map[string]string{}, LastMoved: m.movedAt, Now: m.now}
	isCand := make(map[string]bool, len(cands))
	for _, c := range cands {
		isCand[c.Name] = true
	}
	for _, k := range keys {
		w, ok := m.loads[k]
		in.Shards = append(in.Shards, ShardLoad{Key: k, Load: float64(w) / 1e6, Measured: ok})
		if p, ok := m.pending[k]; ok && isCand[p.to] {
			in.Current[k] = p.to
			continue
		}
		if l := m.leases[k]; l.Owner != "" && isCand[l.Owner] && !m.isGone(l.Owner) {
			in.Current[k] = l.Owner
		}
	}
	a, moves := AssignByLoad(in, LoadParams{Threshold: m.cfg.LoadThreshold, MaxMoves: m.cfg.LoadMaxMoves, CoolDown: m.cfg.LoadCoolDown})
	// A node moves shards only when it was over its share at two
	// rebalances in a row: a blip of load (a catch-up after a move, a
	// busy core) moves nothing.
	if rebalance {
		over := mineOver(moves, me)
		rebalance = over && m.wasOver
		m.wasOver = over
	}
	// Adopt only this node's own moves, of shards it runs, when a
	// rebalance is due; undo the rest (last first: a shard may move twice).
	for i := len(moves) - 1; i >= 0; i-- {
		mv := moves[i]
		if rebalance && mv.From == me && m.run[mv.Shard] != nil && !m.run[mv.Shard].releasing {
			continue
		}
		a[mv.Shard] = mv.From
	}
	if rebalance {
		for _, mv := range moves {
			if a[mv.Shard] == mv.To && mv.From == me {
				m.pending[mv.Shard] = pendingMove{to: mv.To, at: m.now}
				m.movedAt[mv.Shard] = m.now
				m.loadMoves = append(m.loadMoves, mv)
			}
		}
	}
	return a
}

// mineOver reports whether moves include one from me (this node is over
// its share, by the assignment's rule).
func mineOver(moves []LoadMove, me string) bool {
	for _, mv := range moves {
		if mv.From == me {
			return true
		}
	}
	return false
}

// rebalanceDue reports whether this node may decide load moves now.
func (m *Machine) rebalanceDue() bool {
	return m.cfg.LoadAware && !m.stopping && m.now.Sub(m.lastRebalance) >= m.cfg.RebalanceInterval
}

// onTickLoad: a rebalance is due; pending moves whose new owner did not
// take the lease within LeaseExpiry of the move (once it no longer runs
// here) are dropped.
func (m *Machine) onTickLoad(now time.Time) {
	if !m.cfg.LoadAware {
		return
	}
	for k, p := range m.pending {
		// While the shard still runs here it is being handed off (a slow
		// processor may take its time to finish): the move stands.
		if m.run[k] == nil && now.Sub(p.at) > m.cfg.LeaseExpiry {
			delete(m.pending, k)
			m.assignDirty = true
		}
	}
	if m.rebalanceDue() {
		m.assignDirty = true
	}
}

// sawOwner notes an owner change of a row for the load state: a take by a
// new owner is a move (cool-down), and ends a pending move to it.
func (m *Machine) sawOwner(now time.Time, key, old, owner string) {
	if !m.cfg.LoadAware || owner == old {
		return
	}
	m.assignDirty = true
	if owner == "" {
		return
	}
	if old != "" {
		m.movedAt[key] = now // from one owner to another (a move for load is timed by its release)
	}
	if p, ok := m.pending[key]; ok && p.to == owner {
		delete(m.pending, key)
	}
}

// TakeLoadMoves returns the load moves this node decided since the last
// call (for logs and status) and forgets them.
func (m *Machine) TakeLoadMoves() []LoadMove {
	out := m.loadMoves
	m.loadMoves = nil
	return out
}

// pruneLoad forgets the load state of rows the table no longer has.
func (m *Machine) pruneLoad(gone func(string) bool) {
	pruneKeys(m.loads, gone)
	pruneKeys(m.pending, gone)
	pruneKeys(m.movedAt, gone)
}
