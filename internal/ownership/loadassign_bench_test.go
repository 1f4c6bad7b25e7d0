package ownership

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// BenchmarkAssignByLoad: the load-aware assignment of S skewed shards
// (lognormal loads) over N members, from nothing owned and from its own
// balanced result (the common case: a load message changed nothing much).
//
//	go test -run '^$' -bench AssignByLoad -benchmem ./internal/ownership/
func BenchmarkAssignByLoad(b *testing.B) {
	for _, c := range []struct{ s, n int }{{100, 3}, {1000, 10}, {10000, 100}} {
		r := rand.New(rand.NewPCG(1, uint64(c.s)))
		in := LoadInput{Members: candidatesOf(nodeNames(r, c.n)...)}
		for i := range c.s {
			in.Shards = append(in.Shards, ShardLoad{Key: fmt.Sprintf("shardId-%012d", i), Load: math.Exp(r.NormFloat64()), Measured: true})
		}
		b.Run(fmt.Sprintf("S=%d/N=%d/unowned", c.s, c.n), func(b *testing.B) {
			for b.Loop() {
				AssignByLoad(in, LoadParams{})
			}
		})
		balanced := in
		balanced.Current, _ = AssignByLoad(in, LoadParams{})
		b.Run(fmt.Sprintf("S=%d/N=%d/balanced", c.s, c.n), func(b *testing.B) {
			for b.Loop() {
				AssignByLoad(balanced, LoadParams{})
			}
		})
	}
}
