package engine

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/internal/metrics"
	"github.com/kinactor/kinactor/internal/stream"
	"github.com/kinactor/kinactor/kpl"
)

func TestDeaggregateFiltersRangeAndPassesMalformedWhole(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	// two user records: one hashing low, one high (explicit hash keys)
	agg, err := kpl.Aggregate([]kpl.UserRecord{
		{PartitionKey: "a", ExplicitHashKey: "10", Data: []byte("low")},
		{PartitionKey: "b", ExplicitHashKey: "340282366920938463463374607431768211400", Data: []byte("high")},
		{PartitionKey: "c", ExplicitHashKey: "20", Data: []byte("low2")},
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := append(append([]byte{}, kpl.Magic...), []byte("not a protobuf, not a digest")...)
	b := stream.Batch{Records: []stream.Record{
		{SequenceNumber: "1", Data: []byte("plain")},
		{SequenceNumber: "2", Data: agg},
		{SequenceNumber: "3", Data: bad},
	}}
	// the shard owns the lower half of the hash space
	got := deaggregate(b, "0", "170141183460469231731687303715884105727", m)
	var desc []string
	for _, r := range got.Records {
		desc = append(desc, r.SequenceNumber+"/"+string(rune('0'+r.SubSequenceNumber))+"="+string(r.Data))
	}
	want := []string{"1/0=plain", "2/0=low", "2/2=low2", "3/0=" + string(bad)}
	if len(desc) != len(want) {
		t.Fatalf("records %q, want %q", desc, want)
	}
	for i := range want {
		if desc[i] != want[i] {
			t.Fatalf("record %d = %q, want %q", i, desc[i], want[i])
		}
	}
	for kind, n := range map[string]float64{"user_record": 2, "out_of_range": 1, "malformed": 1} {
		if v := testutil.ToFloat64(m.KPLRecords.WithLabelValues(kind)); v != n {
			t.Errorf("kpl_records_total{kind=%q} = %v, want %v", kind, v, n)
		}
	}
	// a batch with no aggregate is returned as it is
	plain := stream.Batch{Records: []stream.Record{{SequenceNumber: "9", Data: []byte("x")}}}
	if got := deaggregate(plain, "0", "1", m); len(got.Records) != 1 {
		t.Fatalf("plain batch changed: %+v", got)
	}
}
