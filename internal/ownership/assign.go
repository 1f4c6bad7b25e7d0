// Assignment: the pure mapping of shards to members (weighted rendezvous
// with bounded load) that every node computes alike from the same view.
package ownership

import (
	"hash/fnv"
	"math"
	"sort"
)

// Candidate is a member that may own shards, with its capacity weight
// (a weight ≤ 0 counts as 1; a draining member should not be passed in).
type Candidate struct {
	Name   string
	Weight int
}

// Assign maps every shard to exactly one candidate by weighted rendezvous
// (highest-random-weight) hashing with bounded load: each candidate takes
// at most ⌈S·w/W⌉ shards. Every shard first goes to its highest-scoring
// candidate; a candidate over its cap keeps its strongest shards (highest
// score) and the rest go, best score first, to candidates with room. The
// result depends only on the sets given (not their order), so every node
// computes the same answer from the same view; and when a candidate joins or
// leaves, close to the ideal S/N shards move.
//
// It returns nil when there are no candidates.
func Assign(shards []string, members []Candidate) map[string]string {
	if len(members) == 0 {
		return nil
	}
	ms := append([]Candidate(nil), members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	total := 0
	for i := range ms {
		if ms[i].Weight <= 0 {
			ms[i].Weight = 1
		}
		total += ms[i].Weight
	}
	ss := append([]string(nil), shards...)
	sort.Strings(ss)
	ss = dedupe(ss)
	s := len(ss)
	caps := make([]int, len(ms))
	for i, m := range ms {
		caps[i] = (s*m.Weight + total - 1) / total // ⌈S·w/W⌉
	}
	// scores[si][mi]
	scores := make([][]float64, s)
	top := make([]int, s)
	for si, sh := range ss {
		scores[si] = make([]float64, len(ms))
		for mi, m := range ms {
			scores[si][mi] = Score(sh, m.Name, m.Weight)
			if scores[si][mi] > scores[si][top[si]] {
				top[si] = mi
			}
		}
	}
	// Phase 1: top choice. Phase 2: over-cap members shed their weakest.
	held := make([][]int, len(ms))
	for si := range ss {
		held[top[si]] = append(held[top[si]], si)
	}
	owner := make([]int, s)
	load := make([]int, len(ms))
	var pool []int
	for mi, list := range held {
		sort.Slice(list, func(a, b int) bool {
			x, y := scores[list[a]][mi], scores[list[b]][mi]
			if x != y {
				return x > y
			}
			return list[a] < list[b]
		})
		for k, si := range list {
			if k < caps[mi] {
				owner[si] = mi
				load[mi]++
			} else {
				pool = append(pool, si)
			}
		}
	}
	// Phase 3: the shed shards go to members with room, best pair first.
	type pair struct {
		score     float64
		shard, mi int
	}
	var pairs []pair
	for _, si := range pool {
		for mi := range ms {
			if load[mi] < caps[mi] {
				pairs = append(pairs, pair{scores[si][mi], si, mi})
			}
		}
	}
	sort.Slice(pairs, func(i, j int) bool {
		a, b := pairs[i], pairs[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if a.shard != b.shard {
			return a.shard < b.shard
		}
		return a.mi < b.mi
	})
	placed := make(map[int]bool, len(pool))
	for _, p := range pairs {
		if placed[p.shard] || load[p.mi] >= caps[p.mi] {
			continue
		}
		owner[p.shard] = p.mi
		load[p.mi]++
		placed[p.shard] = true
	}
	out := make(map[string]string, s)
	for si, sh := range ss {
		out[sh] = ms[owner[si]].Name
	}
	return out
}

// Score is the weighted rendezvous score of a (shard, member) pair:
// -w / ln(u) for u uniform in (0,1) from a hash of both names. Higher wins.
func Score(shard, member string, weight int) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(shard))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(member))
	x := mix(h.Sum64())
	u := (float64(x>>11) + 0.5) / (1 << 53) // in (0,1)
	if weight <= 0 {
		weight = 1
	}
	return -float64(weight) / math.Log(u)
}

// mix is a 64-bit finalizer (splitmix64) so that similar names spread well.
func mix(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}

func dedupe(sorted []string) []string {
	out := sorted[:0]
	for i, s := range sorted {
		if i == 0 || s != sorted[i-1] {
			out = append(out, s)
		}
	}
	return out
}
