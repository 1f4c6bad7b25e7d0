package ownership

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// ShardLoad is one shard's measured load, in any non-negative unit (the
// engine uses bytes/s ÷ 2 MiB/s plus the processor's busy fraction).
// Measured false: not measured yet; it then weighs the median of the
// measured shards.
type ShardLoad struct {
	Key      string
	Load     float64
	Measured bool
}

// LoadParams tune AssignByLoad. Zero values take the defaults noted.
type LoadParams struct {
	// Threshold: a member sheds shards only while its load is over
	// (1+Threshold) × its fair share (default 0.10).
	Threshold float64
	// MaxMoves: at most this many shards leave any one member per call
	// (default 2).
	MaxMoves int
	// CoolDown: a shard that moved less than CoolDown ago (LastMoved) is
	// not moved again (default 5m).
	CoolDown time.Duration
}

// LoadInput is what AssignByLoad assigns from.
type LoadInput struct {
	Shards  []ShardLoad
	Members []Candidate // capacity weights; ≤ 0 counts as 1
	// Current: each shard's holder now. A holder that is not in Members
	// (or "") leaves the shard unowned.
	Current map[string]string
	// LastMoved: when each shard last moved, by the caller's clock.
	LastMoved map[string]time.Time
	Now       time.Time
}

// LoadMove is one shard moved by rebalancing (not the placement of an
// unowned shard).
type LoadMove struct {
	Shard, From, To string
	Reason          string
}

// AssignByLoad maps every shard to one member so that each member's load
// stays near its fair share (total load × its weight ÷ the sum of weights),
// moving as little as it can:
//
//  1. Weights: a measured shard weighs its load (0 counts as a tiny
//     epsilon, so that a shard always weighs something); an unmeasured one
//     weighs the median of the measured ones, or 1 when none is measured.
//  2. A shard with a current holder among the members stays with it: a
//     change of load that leaves every member within the threshold moves
//     nothing (hysteresis).
//  3. Unowned shards are placed heaviest first (ties by key), each on the
//     first member in its rendezvous order (Score, as Assign uses) whose
//     load with it stays within (1+Threshold) × its share: consistent
//     hashing with bounded loads. When none has room, on the member with
//     the lowest (load + weight) / share.
//  4. Rebalance: while some member is over (1+Threshold) × its share, the
//     most loaded member that can improve moves one shard to another
//     member: the (shard, member) pair, among its shards not in cool-down
//     and not moved yet in this call, that minimises the larger of the two
//     members' resulting load/share ratios, and only if that is below the
//     giver's ratio before the move (so a move never makes the worst
//     member worse, and nothing ping-pongs). At most MaxMoves shards leave one member per
//     call. Shards are indivisible: when no move can help (one shard
//     heavier than a share), the result is the best it found, not within
//     the threshold.
//
// The result depends only on the inputs, never on the order of the slices
// or of map iteration, so every node computes the same assignment from the
// same inputs. It returns nil when there are no members.
//
// Cost: O(S·N) for the scores of unowned shards (only those), O(S log S)
// for sorting, and O(moves · (N log N + S)) for the rebalance (each move
// tries the giver's shards against every member).
func AssignByLoad(in LoadInput, p LoadParams) (map[string]string, []LoadMove) {
	if len(in.Members) == 0 {
		return nil, nil
	}
	if p.Threshold <= 0 {
		p.Threshold = 0.10
	}
	if p.MaxMoves <= 0 {
		p.MaxMoves = 2
	}
	if p.CoolDown <= 0 {
		p.CoolDown = 5 * time.Minute
	}
	ms := slices.Clone(in.Members)
	slices.SortFunc(ms, func(a, b Candidate) int { return cmp.Compare(a.Name, b.Name) })
	ms = slices.CompactFunc(ms, func(a, b Candidate) bool { return a.Name == b.Name })
	idx := make(map[string]int, len(ms))
	totalW := 0
	for i := range ms {
		if ms[i].Weight <= 0 {
			ms[i].Weight = 1
		}
		totalW += ms[i].Weight
		idx[ms[i].Name] = i
	}

	shards := slices.Clone(in.Shards)
	slices.SortStableFunc(shards, func(a, b ShardLoad) int { return cmp.Compare(a.Key, b.Key) })
	shards = slices.CompactFunc(shards, func(a, b ShardLoad) bool { return a.Key == b.Key })
	w := shardWeights(shards)
	total := 0.0
	for _, x := range w {
		total += x
	}
	share := make([]float64, len(ms))
	for i, m := range ms {
		share[i] = total * float64(m.Weight) / float64(totalW)
	}

	owner := make([]int, len(shards))
	load := make([]float64, len(ms))
	held := make([][]int, len(ms)) // shard indexes per member
	var unowned []int
	for si, s := range shards {
		if mi, ok := idx[in.Current[s.Key]]; ok && in.Current[s.Key] != "" {
			owner[si] = mi
			load[mi] += w[si]
			held[mi] = append(held[mi], si)
		} else {
			owner[si] = -1
			unowned = append(unowned, si)
		}
	}

	// Placement of the unowned shards: heaviest first.
	slices.SortStableFunc(unowned, func(a, b int) int {
		if c := cmp.Compare(w[b], w[a]); c != 0 {
			return c
		}
		return cmp.Compare(shards[a].Key, shards[b].Key)
	})
	limit := 1 + p.Threshold
	for _, si := range unowned {
		order := scoreOrder(shards[si].Key, ms)
		best := -1
		for _, mi := range order {
			if load[mi]+w[si] <= limit*share[mi] {
				best = mi
				break
			}
		}
		if best < 0 {
			for _, mi := range order {
				if best < 0 || (load[mi]+w[si])/share[mi] < (load[best]+w[si])/share[best] {
					best = mi
				}
			}
		}
		owner[si] = best
		load[best] += w[si]
		held[best] = append(held[best], si)
	}

	// Rebalance.
	var moves []LoadMove
	gave := make([]int, len(ms))
	movedNow := make([]bool, len(shards))
	ratio := func(mi int) float64 { return load[mi] / share[mi] }
	byRatio := make([]int, len(ms))
	for {
		for i := range byRatio {
			byRatio[i] = i
		}
		slices.SortStableFunc(byRatio, func(a, b int) int {
			if c := cmp.Compare(ratio(b), ratio(a)); c != 0 {
				return c
			}
			return cmp.Compare(ms[a].Name, ms[b].Name)
		})
		moved := false
		for _, from := range byRatio {
			rf := ratio(from)
			if rf <= limit {
				break // sorted: no member after it is over either
			}
			if gave[from] >= p.MaxMoves {
				continue
			}
			best, to, bestMax := -1, -1, rf
			for _, si := range held[from] {
				if movedNow[si] {
					continue
				}
				if at, ok := in.LastMoved[shards[si].Key]; ok && in.Now.Sub(at) < p.CoolDown {
					continue
				}
				for ti := range ms {
					if ti == from {
						continue
					}
					after := max((load[from]-w[si])/share[from], (load[ti]+w[si])/share[ti])
					better := after < bestMax
					if !better && best >= 0 && after == bestMax {
						better = shards[si].Key < shards[best].Key || (si == best && ms[ti].Name < ms[to].Name)
					}
					if better {
						best, to, bestMax = si, ti, after
					}
				}
			}
			if best < 0 {
				continue
			}
			moves = append(moves, LoadMove{Shard: shards[best].Key, From: ms[from].Name, To: ms[to].Name,
				Reason: fmt.Sprintf("load: %s at %.2f of its share, %s at %.2f", ms[from].Name, rf, ms[to].Name, ratio(to))})
			load[from] -= w[best]
			load[to] += w[best]
			held[from] = slices.DeleteFunc(held[from], func(x int) bool { return x == best })
			held[to] = append(held[to], best)
			owner[best] = to
			movedNow[best] = true
			gave[from]++
			moved = true
			break
		}
		if !moved {
			break
		}
	}

	out := make(map[string]string, len(shards))
	for si, s := range shards {
		out[s.Key] = ms[owner[si]].Name
	}
	return out, moves
}

// shardWeights returns each shard's weight by rule 1 of AssignByLoad.
func shardWeights(shards []ShardLoad) []float64 {
	var measured []float64
	hi := 0.0
	for _, s := range shards {
		if s.Measured {
			measured = append(measured, max(0, s.Load))
			hi = max(hi, s.Load)
		}
	}
	median := 1.0
	if len(measured) > 0 {
		slices.Sort(measured)
		n := len(measured)
		median = measured[n/2]
		if n%2 == 0 {
			median = (measured[n/2-1] + measured[n/2]) / 2
		}
	}
	eps := 1e-9 * max(hi, 1e-9)
	w := make([]float64, len(shards))
	for i, s := range shards {
		switch {
		case !s.Measured:
			w[i] = max(median, eps)
		default:
			w[i] = max(s.Load, eps)
		}
	}
	return w
}

// scoreOrder returns the member indexes by rendezvous score for key, best
// first (ties by name).
func scoreOrder(key string, ms []Candidate) []int {
	sc := make([]float64, len(ms))
	order := make([]int, len(ms))
	for i, m := range ms {
		sc[i] = Score(key, m.Name, m.Weight)
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if c := cmp.Compare(sc[b], sc[a]); c != 0 {
			return c
		}
		return cmp.Compare(ms[a].Name, ms[b].Name)
	})
	return order
}
