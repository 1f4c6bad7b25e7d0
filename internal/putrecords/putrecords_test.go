package putrecords

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// fakeKinesis answers PutRecords from a script: each call fails the entries
// whose data its fail function picks (or the whole call with err), and
// records what every call carried.
type fakeKinesis struct {
	calls [][]string // data of each call's entries
	fail  func(call int, data string) bool
	err   func(call int) error
}

func (f *fakeKinesis) PutRecords(_ context.Context, in *kinesis.PutRecordsInput, _ ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error) {
	call := len(f.calls)
	var data []string
	for _, e := range in.Records {
		data = append(data, string(e.Data))
	}
	f.calls = append(f.calls, data)
	if f.err != nil {
		if err := f.err(call); err != nil {
			return nil, err
		}
	}
	out := &kinesis.PutRecordsOutput{}
	for i, d := range data {
		if f.fail != nil && f.fail(call, d) {
			out.Records = append(out.Records, types.PutRecordsResultEntry{ErrorCode: aws.String("ProvisionedThroughputExceededException"), ErrorMessage: aws.String("slow down")})
			continue
		}
		out.Records = append(out.Records, types.PutRecordsResultEntry{ShardId: aws.String("shardId-0"), SequenceNumber: aws.String(fmt.Sprintf("%d-%d", call, i))})
	}
	return out, nil
}

func datas(es []types.PutRecordsRequestEntry) []string {
	var ds []string
	for _, e := range es {
		ds = append(ds, string(e.Data))
	}
	return ds
}

func TestNumbered(t *testing.T) {
	g := NewNumbered(3, 5)
	got := append(datas(g.Next(4)), datas(g.Next(3))...)
	want := []string{
		`{"pk":"k0","n":5}`, `{"pk":"k1","n":5}`, `{"pk":"k2","n":5}`, `{"pk":"k0","n":6}`,
		`{"pk":"k1","n":6}`, `{"pk":"k2","n":6}`, `{"pk":"k0","n":7}`,
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("records\n%v\nwant\n%v", got, want)
	}
	if m := fmt.Sprint(g.Made()); m != "[3 2 2]" {
		t.Fatalf("Made = %s", m)
	}
	for _, e := range g.Next(3) {
		if pk := aws.ToString(e.PartitionKey); !strings.Contains(string(e.Data), `"pk":"`+pk+`"`) {
			t.Fatalf("partition key %s of %s", pk, e.Data)
		}
	}
}

// Failed entries are resent alone and in order; each entry's result is the
// one of the call that wrote it.
func TestPutResendsFailedEntriesInOrder(t *testing.T) {
	f := &fakeKinesis{fail: func(call int, d string) bool {
		return call == 0 && (strings.Contains(d, `"k1"`) || strings.Contains(d, `"k3"`)) || call == 1 && strings.Contains(d, `"k3"`)
	}}
	var failures int
	w := Writer{Client: f, Stream: "s", OnFailure: func(error) { failures++ }}
	entries := NewNumbered(5, 1).Next(5)
	res, err := w.Put(context.Background(), entries)
	if err != nil {
		t.Fatal(err)
	}
	calls := fmt.Sprint(f.calls)
	if want := `[[{"pk":"k0","n":1} {"pk":"k1","n":1} {"pk":"k2","n":1} {"pk":"k3","n":1} {"pk":"k4","n":1}] [{"pk":"k1","n":1} {"pk":"k3","n":1}] [{"pk":"k3","n":1}]]`; calls != want {
		t.Fatalf("calls\n%s\nwant\n%s", calls, want)
	}
	var seqs []string
	for _, r := range res {
		seqs = append(seqs, aws.ToString(r.SequenceNumber))
	}
	if got := strings.Join(seqs, " "); got != "0-0 1-0 0-2 2-0 0-4" {
		t.Fatalf("results %s", got)
	}
	if failures != 2 {
		t.Fatalf("%d failures reported, want 2", failures)
	}
}

func TestPutGivesUp(t *testing.T) {
	f := &fakeKinesis{fail: func(_ int, d string) bool { return strings.Contains(d, `"k1"`) }}
	_, err := Writer{Client: f, Stream: "s", MaxAttempts: 3}.Put(context.Background(), NewNumbered(2, 1).Next(2))
	if err == nil || !strings.Contains(err.Error(), "1 of 2 records not written after 3 attempts") || !strings.Contains(err.Error(), "slow down") {
		t.Fatalf("err = %v", err)
	}
	if len(f.calls) != 3 {
		t.Fatalf("%d calls, want 3", len(f.calls))
	}
}

func TestPutCallErrors(t *testing.T) {
	boom := errors.New("connection reset")
	once := func(call int) error {
		if call == 0 {
			return boom
		}
		return nil
	}
	// Without RetryCalls a failed call ends Put.
	f := &fakeKinesis{err: once}
	if _, err := (Writer{Client: f, Stream: "s"}).Put(context.Background(), NewNumbered(2, 1).Next(2)); !errors.Is(err, boom) || len(f.calls) != 1 {
		t.Fatalf("err = %v after %d calls", err, len(f.calls))
	}
	// With it the same entries go again.
	f = &fakeKinesis{err: once}
	if _, err := (Writer{Client: f, Stream: "s", RetryCalls: true}).Put(context.Background(), NewNumbered(2, 1).Next(2)); err != nil || len(f.calls) != 2 || fmt.Sprint(f.calls[0]) != fmt.Sprint(f.calls[1]) {
		t.Fatalf("err = %v, calls %v", err, f.calls)
	}
	// A cancelled context ends the wait between attempts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f = &fakeKinesis{fail: func(int, string) bool { return true }}
	if _, err := (Writer{Client: f, Stream: "s"}).Put(ctx, NewNumbered(1, 1).Next(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err = %v", err)
	}
}
