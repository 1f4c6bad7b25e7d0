package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	kledger "github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// restartRig is a stream with a producer and a cluster of `kinactor node`
// processes (none started yet) with the default lease timings: renewals
// every 30 s, LeaseExpiry 90 s. A restart that waited for expiry would
// take 90 s; these tests require every shard to flow again well before.
type restartRig struct {
	c      *clusterrun.Cluster
	prod   *clusterrun.Producer
	shards []string
}

const restartShards = 4

func newRestartRig(t testing.TB, name string) *restartRig {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	bin, env := buildWithServers(t, dir, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	localaws.CreateStreamT(t, kc, name, restartShards)
	c, err := clusterrun.Start(ctx, clusterrun.Options{Bin: bin, Dir: dir, App: name, Stream: name, Env: env.Environ(),
		ExtraArgs: []string{"--sync-interval", "2s"}})
	requireNoError(t, err, "cluster")
	r := &restartRig{c: c}
	t.Cleanup(func() {
		if r.prod != nil {
			_, _ = r.prod.Stop()
		}
		if t.Failed() {
			for _, p := range c.All() {
				t.Logf("log of %s (tail):\n%s", p.Name, p.LogTail(4000))
			}
		}
		c.Close()
	})
	for i := 0; i < restartShards; i++ {
		r.shards = append(r.shards, fmt.Sprintf("shardId-%012d", i))
	}
	r.prod = clusterrun.StartProducer(kc, name, 16, 40)
	return r
}

// flowing returns nil once every shard has a ledger line written after
// since by one of nodes.
func (r *restartRig) flowing(since time.Time, nodes []*clusterrun.Proc) error {
	names := map[string]bool{}
	for _, p := range nodes {
		names[p.Name] = true
	}
	es, err := kledger.ReadDir(r.c.LedgerDir())
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, e := range es {
		if names[e.Node] && e.TS > since.UnixMilli() {
			seen[e.Shard] = true
		}
	}
	for _, s := range r.shards {
		if !seen[s] {
			return fmt.Errorf("no record of %s processed by %v since %s", s, keys(names), since.Format("15:04:05.000"))
		}
	}
	return nil
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// takeReasons sums the nodes' lease takes by reason.
func (r *restartRig) takeReasons(t testing.TB, nodes []*clusterrun.Proc) map[string]float64 {
	t.Helper()
	total := map[string]float64{}
	for _, p := range nodes {
		m, err := r.c.Metrics(context.Background(), p)
		requireNoError(t, err, "metrics of "+p.Name)
		for k, v := range m.SumBy("kinactor_lease_takes_total", "reason") {
			total[k] += v
		}
	}
	return total
}

// startFlowing starts n nodes varied by o and waits until every shard
// flows on them.
func (r *restartRig) startFlowing(t testing.TB, n int, o clusterrun.NodeOptions) []*clusterrun.Proc {
	t.Helper()
	var ps []*clusterrun.Proc
	for i := 0; i < n; i++ {
		p, err := r.c.AddNodeWith(context.Background(), o)
		requireNoError(t, err, "starting a node")
		ps = append(ps, p)
	}
	t0 := time.Now()
	checkFor(t, 60*time.Second, func() error { return r.flowing(t0, ps) })
	return ps
}

// killAndReplace SIGKILLs old and starts as many new nodes varied by o;
// it returns them and when the last kill was done.
func (r *restartRig) killAndReplace(t testing.TB, old []*clusterrun.Proc, o clusterrun.NodeOptions) ([]*clusterrun.Proc, time.Time) {
	t.Helper()
	for _, p := range old {
		requireNoError(t, r.c.Kill(p), "kill")
	}
	killed := time.Now()
	var fresh []*clusterrun.Proc
	for range old {
		p, err := r.c.AddNodeWith(context.Background(), o)
		requireNoError(t, err, "starting a new node")
		fresh = append(fresh, p)
	}
	return fresh, killed
}

// restartDeadline: well before the 90 s LeaseExpiry a take by expiry
// would need (the restart itself is measured in BENCHMARKS.md).
const restartDeadline = 45 * time.Second

// Three nodes (default names) are killed with SIGKILL and three new ones
// (new default names) started: the old owners are outside every new
// node's view, and the new nodes prove them dead (their processes are gone
// from this host, their gossip ports refuse) instead of waiting 90 s for
// their leases to expire.
func TestWholeClusterKilledAndRestarted(t *testing.T) {
	r := newRestartRig(t, "restart-cluster")
	o := clusterrun.NodeOptions{DefaultName: true}
	fresh, killed := r.killAndReplace(t, r.startFlowing(t, 3, o), o)
	started := fresh[0].Started
	checkFor(t, restartDeadline, func() error { return r.flowing(killed, fresh) })
	t.Logf("every shard flowing again %v after the first new node was ready (%v after the kills; new nodes %s, %s, %s)",
		time.Since(started).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), fresh[0].Name, fresh[1].Name, fresh[2].Name)
	reasons := r.takeReasons(t, fresh)
	t.Logf("the new nodes' takes by reason: %v", reasons)
	if reasons["expired"] > 0 {
		t.Errorf("%v leases taken by expiry: their owners were not proven dead", reasons["expired"])
	}
}

// A single node (no gossip, default name) is killed with SIGKILL and
// started again, as a systemd unit or a one-replica deployment is: the new
// process, with a new name, proves the old one dead (its process id is
// gone from this host) and reads every shard at once.
func TestSingleNodeKilledAndRestarted(t *testing.T) {
	r := newRestartRig(t, "restart-single")
	o := clusterrun.NodeOptions{DefaultName: true, Single: true}
	first := r.startFlowing(t, 1, o)[0]
	fresh, killed := r.killAndReplace(t, []*clusterrun.Proc{first}, o)
	second := fresh[0]
	if second.Name == first.Name {
		t.Fatalf("the restarted node has its old name %s: the test needs a new one", first.Name)
	}
	checkFor(t, restartDeadline, func() error { return r.flowing(killed, []*clusterrun.Proc{second}) })
	t.Logf("every shard flowing again %v after the restarted node (%s, was %s) was ready",
		time.Since(second.Started).Round(time.Millisecond), second.Name, first.Name)
	reasons := r.takeReasons(t, []*clusterrun.Proc{second})
	if reasons["expired"] > 0 || reasons["dead_owner"] != restartShards {
		t.Errorf("takes by reason %v, want %d dead_owner and no expired", reasons, restartShards)
	}
}

// An owner that is alive but cannot be reached (its process paused: the
// kernel still accepts connections to its gossip port, and its process id
// is there) is outside the view of a node of another gossip cluster: it
// cannot be proven dead, so its leases are taken only when they expire.
func TestAliveUnreachableOwnerIsTakenOnlyAtExpiry(t *testing.T) {
	r := newRestartRig(t, "restart-unreachable")
	ctx := context.Background()
	// Renewals every second, LeaseExpiry 3 s: expiry is reachable in a test.
	args := []string{"--renew-interval", "1s"}
	const expiry = 3 * time.Second
	owner, err := r.c.AddNodeWith(ctx, clusterrun.NodeOptions{Args: args})
	requireNoError(t, err, "starting the owner")
	t0 := time.Now()
	checkFor(t, 60*time.Second, func() error { return r.flowing(t0, []*clusterrun.Proc{owner}) })

	// The other node forms a gossip cluster of its own: the owner is never
	// in its view. While the owner renews, it takes nothing.
	other, err := r.c.AddNodeWith(ctx, clusterrun.NodeOptions{Alone: true, Args: args})
	requireNoError(t, err, "starting the other node")
	<-time.After(3 * expiry) // time for a wrong take to happen, not a wait for a condition
	if st, err := r.c.Status(ctx, other); err != nil || len(st.Shards) != 0 {
		t.Fatalf("the other node runs %d shards (err %v) while their owner renews", len(st.Shards), err)
	}

	requireNoError(t, r.c.Pause(owner), "pause")
	paused := time.Now()
	checkFor(t, 60*time.Second, func() error { return r.flowing(paused, []*clusterrun.Proc{other}) })
	took := time.Since(paused)
	reasons := r.takeReasons(t, []*clusterrun.Proc{other})
	t.Logf("the paused owner's shards flowing on the other node %v after the pause; takes by reason %v", took.Round(time.Millisecond), reasons)
	if reasons["dead_owner"] > 0 || reasons["expired"] != restartShards {
		t.Errorf("takes by reason %v, want %d expired and no dead_owner: a live owner was taken as dead", reasons, restartShards)
	}
	// The owner's last renewal was at most a renew interval before the pause.
	if took < expiry-time.Second {
		t.Errorf("shards taken %v after the pause, before the lease could expire (%v after the last renewal)", took, expiry)
	}
	requireNoError(t, r.c.Kill(owner), "kill the paused owner")
}

// BenchmarkRestartIdle measures how long every shard stays unprocessed
// when all of a stream's nodes are killed and new ones (new default names)
// started: from the first new node's being ready to every shard flowing
// again, with the default lease timings (expiry 90 s).
//
//	go test -run '^$' -bench RestartIdle -benchtime 1x ./test/
func BenchmarkRestartIdle(b *testing.B) {
	for _, c := range []struct {
		name  string
		nodes int
		o     clusterrun.NodeOptions
	}{
		{"cluster-of-3", 3, clusterrun.NodeOptions{DefaultName: true}},
		{"single-node", 1, clusterrun.NodeOptions{DefaultName: true, Single: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var idle, sinceKill time.Duration
			for i := 0; i < b.N; i++ {
				r := newRestartRig(b, fmt.Sprintf("restart-bench-%d-%d", c.nodes, i))
				fresh, killed := r.killAndReplace(b, r.startFlowing(b, c.nodes, c.o), c.o)
				checkFor(b, restartDeadline, func() error { return r.flowing(killed, fresh) })
				idle += time.Since(fresh[0].Started)
				sinceKill += time.Since(killed)
			}
			b.ReportMetric(idle.Seconds()/float64(b.N), "s-idle-after-ready")
			b.ReportMetric(sinceKill.Seconds()/float64(b.N), "s-idle-after-kill")
		})
	}
}

// BenchmarkSingleNodeRestartedASecondLater: a single node (no gossip,
// default name) killed with SIGKILL and started again 1 s later, as a
// supervisor does; from the new process's start (not its ready file) to
// every shard flowing again. "zombie": the killed process has not been
// reaped by its parent yet when the new one starts (kill(pid, 0) still
// succeeds on it); "reaped": it has.
//
//	go test -run '^$' -bench SingleNodeRestartedASecondLater -benchtime 3x ./test/
func BenchmarkSingleNodeRestartedASecondLater(b *testing.B) {
	for _, zombie := range []bool{false, true} {
		name := map[bool]string{false: "reaped", true: "zombie"}[zombie]
		b.Run(name, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				r := newRestartRig(b, fmt.Sprintf("restart-1s-%s-%d", name, i))
				first := r.startFlowing(b, 1, clusterrun.NodeOptions{DefaultName: true, Single: true, Unreaped: zombie})[0]
				if zombie {
					reap, err := r.c.KillToZombie(first)
					requireNoError(b, err, "kill")
					defer reap()
				} else {
					requireNoError(b, r.c.Kill(first), "kill")
				}
				<-time.After(time.Second) // the restart delay of the scenario, not a wait for a condition
				var launched time.Time
				second, err := r.c.AddNodeWith(context.Background(), clusterrun.NodeOptions{DefaultName: true, Single: true,
					Started: func(*clusterrun.Proc) { launched = time.Now() }})
				requireNoError(b, err, "restarting")
				checkFor(b, restartDeadline, func() error { return r.flowing(launched, []*clusterrun.Proc{second}) })
				took := time.Since(launched)
				b.Logf("%s: every shard flowing %v after the new process started (ready %v after it)", name, took.Round(time.Millisecond), second.Started.Sub(launched).Round(time.Millisecond))
				total += took
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-start-to-flowing")
		})
	}
}
