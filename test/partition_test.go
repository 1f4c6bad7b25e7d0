package test

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	dtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/hashicorp/memberlist"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/gossip"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/testenv/localaws"
)

// leaseWrite is one lease-table write DynamoDB accepted, as the writer saw it.
type leaseWrite struct {
	node    string
	key     string
	counter int64
	op      string // take, renew, checkpoint, release
}

// writeLog records every accepted UpdateItem on the lease table, per node.
type writeLog struct {
	mu     sync.Mutex
	writes []leaseWrite
}

type recordingDynamo struct {
	lease.DynamoAPI
	node string
	log  *writeLog
}

func (r recordingDynamo) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	out, err := r.DynamoAPI.UpdateItem(ctx, in, opts...)
	if err != nil || out == nil {
		return out, err
	}
	key, _ := in.Key["leaseKey"].(*dtypes.AttributeValueMemberS)
	cnt, _ := out.Attributes["leaseCounter"].(*dtypes.AttributeValueMemberN)
	if key == nil || cnt == nil {
		return out, err
	}
	n, _ := strconv.ParseInt(cnt.Value, 10, 64)
	expr := *in.UpdateExpression
	op := "renew"
	switch {
	case strings.HasPrefix(expr, "SET #o = :owner"):
		op = "take"
	case strings.Contains(expr, ":cp"):
		op = "checkpoint"
	case strings.HasPrefix(expr, "REMOVE"):
		op = "release"
	}
	r.log.mu.Lock()
	r.log.writes = append(r.log.writes, leaseWrite{node: r.node, key: key.Value, counter: n, op: op})
	r.log.mu.Unlock()
	return out, err
}

// fencingViolations lists writes accepted from a node that was not the
// lease's most recent taker: exactly what fencing must make impossible.
func (l *writeLog) fencingViolations() (violations []string, takes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := map[string][]leaseWrite{}
	for _, w := range l.writes {
		byKey[w.key] = append(byKey[w.key], w)
	}
	for key, ws := range byKey {
		sort.Slice(ws, func(i, j int) bool { return ws[i].counter < ws[j].counter })
		holder := ""
		for _, w := range ws {
			if w.op == "take" {
				holder = w.node
				takes++
				continue
			}
			if w.node != holder {
				violations = append(violations, fmt.Sprintf("%s: %s by %s accepted at counter %d while %s held it", key, w.op, w.node, w.counter, holder))
			}
			if w.op == "release" {
				holder = ""
			}
		}
	}
	return violations, takes
}

// mockTransports puts the named nodes on one in-process memberlist mock
// network, each behind a transport that can drop traffic to chosen peers;
// it returns the transports and the nodes' gossip addresses by name.
func mockTransports(t testing.TB, names ...string) (map[string]*gossip.DropTransport, map[string]string) {
	t.Helper()
	var network memberlist.MockNetwork
	trs := map[string]*gossip.DropTransport{}
	addrs := map[string]string{}
	for _, n := range names {
		mt := network.NewTransport(n)
		ip, port, err := mt.FinalAdvertiseAddr("", 0)
		requireNoError(t, err, "mock transport")
		addrs[n] = net.JoinHostPort(ip.String(), strconv.Itoa(port))
		trs[n] = gossip.NewDropTransport(mt)
	}
	return trs, addrs
}

// A partition splits four nodes into two halves. Each half declares the
// other dead and takes its shards through the fenced lease table; the
// losing side's next write is refused, so no checkpoint from a node that no
// longer holds the lease is ever accepted. When the partition heals the
// halves merge and the shards spread evenly again; no record is lost.
func TestPartitionFencingAndHeal(t *testing.T) {
	env := localaws.StartT(t, localaws.Kinesalite, localaws.Dynalite)
	kc := env.KinesisClient()
	const name = "partition"
	localaws.CreateStreamT(t, kc, name, 8)
	p := newProducer(kc, name, 32)
	p.put(t, 400)
	led := newLedger()
	wlog := &writeLog{}

	// In-process gossip on memberlist's mock network, each node behind a
	// transport that can drop traffic to chosen peers.
	names := []string{"pa", "pb", "pc", "pd"}
	trs, addrs := mockTransports(t, names...)
	nodes := map[string]*kinactor.Node{}
	for _, n := range names {
		nodes[n] = clusterNode(t, env, name, "partition-app", n, nil, led, func(c *kinactor.Config) {
			c.Cluster = &cluster.Config{Transport: trs[n], Join: []string{addrs["pa"], addrs["pc"]}, RejoinInterval: 500 * time.Millisecond,
				ProbeInterval: 500 * time.Millisecond, ProbeTimeout: 400 * time.Millisecond, SuspicionMult: 4}
			c.DynamoDB = recordingDynamo{DynamoAPI: env.DynamoDBClient(), node: n, log: wlog}
		})
	}
	all := []*kinactor.Node{nodes["pa"], nodes["pb"], nodes["pc"], nodes["pd"]}
	checkFor(t, 60*time.Second, func() error { return balanced(all, 2) })
	stop := flow(t, p)
	defer stop()

	// Partition {pa,pb} | {pc,pd}.
	cut := time.Now()
	for _, l := range []string{"pa", "pb"} {
		trs[l].Block(addrs["pc"], addrs["pd"])
	}
	for _, r := range []string{"pc", "pd"} {
		trs[r].Block(addrs["pa"], addrs["pb"])
	}
	// Each half takes the other's shards; the other half's next write fails.
	checkFor(t, 60*time.Second, func() error {
		lost := 0.0
		for _, n := range all {
			lost += scrape(t, n).Sum("kinactor_lease_losses_total")
		}
		if lost < 8 {
			return fmt.Errorf("%v leases lost to fenced writes so far, want 8 (every shard moved across the cut)", lost)
		}
		return nil
	})
	t.Logf("both halves took the other's shards and were fenced out of their own within %v", time.Since(cut).Round(time.Millisecond))

	// Heal: the rejoin loop merges the halves; the shards spread evenly.
	healed := time.Now()
	for _, n := range names {
		trs[n].UnblockAll()
	}
	checkFor(t, 60*time.Second, func() error {
		for _, n := range all {
			alive := 0
			for _, m := range n.Members() {
				if m.State == cluster.StateAlive {
					alive++
				}
			}
			if alive != 4 {
				return fmt.Errorf("%s sees %d members alive", n.WorkerID(), alive)
			}
		}
		return balanced(all, 2)
	})
	t.Logf("partition healed: membership merged and rebalanced in %v", time.Since(healed).Round(time.Millisecond))
	stop()

	total := p.produced()
	checkFor(t, 60*time.Second, func() error {
		if u := led.unique(); u < total {
			return fmt.Errorf("processed %d of %d", u, total)
		}
		return nil
	})
	if u := led.unique(); u != total {
		t.Errorf("processed %d distinct records, produced %d", u, total)
	}
	violations, takes := wlog.fencingViolations()
	for _, v := range violations {
		t.Error("fencing violated: " + v)
	}
	if takes < 16 {
		t.Errorf("only %d takes recorded: the recorder missed writes", takes)
	}
	t.Logf("%d records, %d processed in all (%d duplicates from the partition), %d takes, 0 writes accepted from a node that had lost its lease",
		total, led.processed(), led.processed()-total, takes)
}
