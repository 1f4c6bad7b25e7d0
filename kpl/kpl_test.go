package kpl

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// --- reference implementation: the KPL schema as a descriptor, parsed with
// proto.Unmarshal into dynamicpb. It is the oracle for the protowire walk
// in kpl.go and the baseline in bench_test.go.

var (
	refOnce sync.Once
	refAgg  protoreflect.MessageDescriptor
	refRec  protoreflect.MessageDescriptor
	refTag  protoreflect.MessageDescriptor
)

func refDescriptors(tb testing.TB) {
	tb.Helper()
	refOnce.Do(func() {
		field := func(name string, num int32, label descriptorpb.FieldDescriptorProto_Label, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
			f := &descriptorpb.FieldDescriptorProto{
				Name: proto.String(name), Number: proto.Int32(num),
				Label: label.Enum(), Type: typ.Enum(),
			}
			if typeName != "" {
				f.TypeName = proto.String(typeName)
			}
			return f
		}
		const (
			rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
			req = descriptorpb.FieldDescriptorProto_LABEL_REQUIRED
			opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
			str = descriptorpb.FieldDescriptorProto_TYPE_STRING
			u64 = descriptorpb.FieldDescriptorProto_TYPE_UINT64
			byt = descriptorpb.FieldDescriptorProto_TYPE_BYTES
			msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		)
		fdp := &descriptorpb.FileDescriptorProto{
			Name:    proto.String("kpl_ref.proto"),
			Package: proto.String("kplref"),
			Syntax:  proto.String("proto2"),
			MessageType: []*descriptorpb.DescriptorProto{
				{Name: proto.String("AggregatedRecord"), Field: []*descriptorpb.FieldDescriptorProto{
					field("partition_key_table", 1, rep, str, ""),
					field("explicit_hash_key_table", 2, rep, str, ""),
					field("records", 3, rep, msg, ".kplref.Record"),
				}},
				{Name: proto.String("Tag"), Field: []*descriptorpb.FieldDescriptorProto{
					field("key", 1, req, str, ""),
					field("value", 2, opt, str, ""),
				}},
				{Name: proto.String("Record"), Field: []*descriptorpb.FieldDescriptorProto{
					field("partition_key_index", 1, req, u64, ""),
					field("explicit_hash_key_index", 2, opt, u64, ""),
					field("data", 3, req, byt, ""),
					field("tags", 4, rep, msg, ".kplref.Tag"),
				}},
			},
		}
		fd, err := protodesc.NewFile(fdp, nil)
		if err != nil {
			panic(err)
		}
		refAgg = fd.Messages().ByName("AggregatedRecord")
		refTag = fd.Messages().ByName("Tag")
		refRec = fd.Messages().ByName("Record")
	})
}

// refDeaggregate is Deaggregate done with proto.Unmarshal into dynamicpb.
func refDeaggregate(tb testing.TB, data []byte) ([]UserRecord, error) {
	refDescriptors(tb)
	if !IsAggregated(data) {
		return nil, ErrBadProtobuf
	}
	pb := data[len(Magic) : len(data)-md5.Size]
	if sum := md5.Sum(pb); !bytes.Equal(sum[:], data[len(data)-md5.Size:]) {
		return nil, ErrBadDigest
	}
	m := dynamicpb.NewMessage(refAgg)
	if err := proto.Unmarshal(pb, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProtobuf, err)
	}
	fields := refAgg.Fields()
	pks := m.Get(fields.ByNumber(1)).List()
	ehks := m.Get(fields.ByNumber(2)).List()
	recs := m.Get(fields.ByNumber(3)).List()
	rf := refRec.Fields()
	out := make([]UserRecord, recs.Len())
	for i := range recs.Len() {
		r := recs.Get(i).Message()
		pk := r.Get(rf.ByNumber(1)).Uint()
		if pk >= uint64(pks.Len()) {
			return nil, ErrBadIndex
		}
		u := UserRecord{PartitionKey: pks.Get(int(pk)).String(), Data: r.Get(rf.ByNumber(3)).Bytes(), SubSequenceNumber: int64(i)}
		if r.Has(rf.ByNumber(2)) {
			ehk := r.Get(rf.ByNumber(2)).Uint()
			if ehk >= uint64(ehks.Len()) {
				return nil, ErrBadIndex
			}
			u.ExplicitHashKey = ehks.Get(int(ehk)).String()
		}
		out[i] = u
	}
	return out, nil
}

type tag struct{ key, value string }

// refAggregate builds an aggregate with proto.Marshal of a dynamicpb
// message, with tags on every record and without deduplicating the tables
// (each record gets its own table entries), so it differs from Aggregate's
// encoding.
func refAggregate(tb testing.TB, records []UserRecord, tags [][]tag) []byte {
	tb.Helper()
	refDescriptors(tb)
	m := dynamicpb.NewMessage(refAgg)
	fields := refAgg.Fields()
	pks := m.Mutable(fields.ByNumber(1)).List()
	ehks := m.Mutable(fields.ByNumber(2)).List()
	recs := m.Mutable(fields.ByNumber(3)).List()
	rf, tf := refRec.Fields(), refTag.Fields()
	for i, u := range records {
		r := dynamicpb.NewMessage(refRec)
		pks.Append(protoreflect.ValueOfString(u.PartitionKey))
		r.Set(rf.ByNumber(1), protoreflect.ValueOfUint64(uint64(pks.Len()-1)))
		if u.ExplicitHashKey != "" {
			ehks.Append(protoreflect.ValueOfString(u.ExplicitHashKey))
			r.Set(rf.ByNumber(2), protoreflect.ValueOfUint64(uint64(ehks.Len()-1)))
		}
		r.Set(rf.ByNumber(3), protoreflect.ValueOfBytes(u.Data))
		if i < len(tags) {
			tl := r.Mutable(rf.ByNumber(4)).List()
			for _, tg := range tags[i] {
				t := dynamicpb.NewMessage(refTag)
				t.Set(tf.ByNumber(1), protoreflect.ValueOfString(tg.key))
				if tg.value != "" {
					t.Set(tf.ByNumber(2), protoreflect.ValueOfString(tg.value))
				}
				tl.Append(protoreflect.ValueOfMessage(t))
			}
		}
		recs.Append(protoreflect.ValueOfMessage(r))
	}
	pb, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return frame(pb)
}

// frame wraps protobuf bytes as a KPL record: magic, pb, md5(pb).
func frame(pb []byte) []byte {
	sum := md5.Sum(pb)
	out := append(append([]byte{}, Magic...), pb...)
	return append(out, sum[:]...)
}

func makeRecords(n int) []UserRecord {
	recs := make([]UserRecord, n)
	for i := range recs {
		recs[i] = UserRecord{
			PartitionKey: "pk-" + strconv.Itoa(i%7),
			Data:         []byte(fmt.Sprintf("payload %d", i)),
		}
		if i%3 == 1 {
			recs[i].ExplicitHashKey = strconv.Itoa(i % 5 * 1000)
		}
	}
	return recs
}

func checkRecords(t *testing.T, got, want []UserRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.PartitionKey != w.PartitionKey || g.ExplicitHashKey != w.ExplicitHashKey || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
		if g.SubSequenceNumber != int64(i) {
			t.Fatalf("record %d: SubSequenceNumber %d", i, g.SubSequenceNumber)
		}
	}
}

func TestAggregateDeaggregateRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, 500} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			recs := makeRecords(n)
			if n == 1 {
				recs[0].ExplicitHashKey = "340282366920938463463374607431768211455"
			}
			data, err := Aggregate(recs)
			if err != nil {
				t.Fatal(err)
			}
			if !IsAggregated(data) {
				t.Fatal("IsAggregated false for an aggregate")
			}
			got, err := Deaggregate(data)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, got, recs)
			// The oracle reads Aggregate's output the same way.
			ref, err := refDeaggregate(t, data)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, ref, recs)
		})
	}
}

func TestAggregateDeduplicatesTables(t *testing.T) {
	recs := []UserRecord{
		{PartitionKey: "a", Data: []byte("1")},
		{PartitionKey: "b", ExplicitHashKey: "5", Data: []byte("2")},
		{PartitionKey: "a", ExplicitHashKey: "5", Data: []byte("3")},
		{PartitionKey: "b", ExplicitHashKey: "7", Data: nil},
	}
	data, err := Aggregate(recs)
	if err != nil {
		t.Fatal(err)
	}
	refDescriptors(t)
	m := dynamicpb.NewMessage(refAgg)
	if err := proto.Unmarshal(data[4:len(data)-16], m); err != nil {
		t.Fatal(err)
	}
	if n := m.Get(refAgg.Fields().ByNumber(1)).List().Len(); n != 2 {
		t.Errorf("partition_key_table has %d entries, want 2", n)
	}
	if n := m.Get(refAgg.Fields().ByNumber(2)).List().Len(); n != 2 {
		t.Errorf("explicit_hash_key_table has %d entries, want 2", n)
	}
	got, err := Deaggregate(data)
	if err != nil {
		t.Fatal(err)
	}
	recs[3].Data = []byte{}
	checkRecords(t, got, recs)
}

func TestDeaggregateWithTags(t *testing.T) {
	recs := makeRecords(5)
	tags := [][]tag{{{"k", "v"}}, nil, {{"a", ""}, {"b", "c"}}, {{"", ""}}, {{"x", "y"}}}
	data := refAggregate(t, recs, tags)
	got, err := Deaggregate(data)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, recs)
}

func TestAggregateEmpty(t *testing.T) {
	if _, err := Aggregate(nil); err == nil {
		t.Fatal("Aggregate(nil) succeeded")
	}
	// An aggregate of zero records (empty protobuf) is valid and empty.
	got, err := Deaggregate(frame(nil))
	if err != nil || len(got) != 0 {
		t.Fatalf("empty aggregate: %v, %v", got, err)
	}
}

// appendRecord appends a records field holding body to pb.
func appendRecord(pb []byte, body ...byte) []byte {
	pb = append(pb, 3<<3|2, byte(len(body)))
	return append(pb, body...)
}

func TestDeaggregateMalformed(t *testing.T) {
	valid, err := Aggregate(makeRecords(3))
	if err != nil {
		t.Fatal(err)
	}
	pkTable := []byte{1<<3 | 2, 1, 'k'}
	wrongDigest := append([]byte{}, valid...)
	wrongDigest[len(wrongDigest)-1] ^= 0xff
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"magic only", Magic, ErrBadProtobuf},
		{"magic+15 bytes", append(append([]byte{}, Magic...), make([]byte, 15)...), ErrBadProtobuf},
		{"magic+garbage digest", append(append([]byte{}, Magic...), bytes.Repeat([]byte{0xff}, 40)...), ErrBadDigest},
		{"magic+garbage, right digest", frame(bytes.Repeat([]byte{0xff}, 40)), ErrBadProtobuf},
		{"valid protobuf, wrong digest", wrongDigest, ErrBadDigest},
		{"truncated", valid[:len(valid)-5], ErrBadDigest},
		{"truncated protobuf, right digest", frame(valid[4 : len(valid)-20]), ErrBadProtobuf},
		{"pk index out of range", frame(appendRecord(pkTable, 1<<3, 1, 3<<3|2, 0)), ErrBadIndex},
		{"pk index huge", frame(appendRecord(pkTable, 1<<3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 3<<3|2, 0)), ErrBadIndex},
		{"ehk index out of range", frame(appendRecord(pkTable, 1<<3, 0, 2<<3, 0, 3<<3|2, 0)), ErrBadIndex},
		{"missing partition_key_index", frame(appendRecord(pkTable, 3<<3|2, 0)), ErrBadProtobuf},
		{"missing data", frame(appendRecord(pkTable, 1<<3, 0)), ErrBadProtobuf},
		{"tag without key", frame(appendRecord(pkTable, 1<<3, 0, 3<<3|2, 0, 4<<3|2, 2, 2<<3|2, 0)), ErrBadProtobuf},
		{"record length past end", frame(append(append([]byte{}, pkTable...), 3<<3|2, 10, 1<<3, 0)), ErrBadProtobuf},
		{"field number 0", frame([]byte{0, 0}), ErrBadProtobuf},
		{"stray end group", frame([]byte{5<<3 | 4}), ErrBadProtobuf},
		{"varint overflow", frame(appendRecord(pkTable, 1<<3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 3<<3|2, 0)), ErrBadProtobuf},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Deaggregate(c.data)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v (records %v), want %v", err, got, c.want)
			}
			if _, rerr := refDeaggregate(t, c.data); !errors.Is(rerr, c.want) {
				t.Fatalf("reference err = %v, want %v", rerr, c.want)
			}
		})
	}
}

func TestDeaggregateUnknownFieldsAndWrongWireTypes(t *testing.T) {
	pkTable := []byte{1<<3 | 2, 1, 'k'}
	pb := append([]byte{}, pkTable...)
	pb = append(pb, 9<<3, 5)                 // unknown varint field
	pb = append(pb, 1<<3, 7)                 // partition_key_table as varint: unknown
	pb = append(pb, 7<<3|3, 1<<3, 1, 7<<3|4) // unknown group
	pb = append(pb, 8<<3|5, 1, 2, 3, 4)      // unknown fixed32
	pb = appendRecord(pb, 1<<3, 0, 3<<3|2, 1, 'x', 1<<3|2, 0, 9<<3|1, 0, 0, 0, 0, 0, 0, 0, 0)
	pb = appendRecord(pb, 1<<3, 5, 1<<3, 0, 3<<3|2, 1, 'y', 3<<3|2, 1, 'z') // last value wins
	data := frame(pb)
	want := []UserRecord{{PartitionKey: "k", Data: []byte("x")}, {PartitionKey: "k", Data: []byte("z"), SubSequenceNumber: 1}}
	got, err := Deaggregate(data)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, want)
	ref, err := refDeaggregate(t, data)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, ref, want)
}

func TestIsAggregated(t *testing.T) {
	for _, d := range [][]byte{nil, {}, []byte("hello world, a plain record of some length"), Magic, append(append([]byte{}, Magic...), make([]byte, 15)...), append([]byte{0xF3, 0x89, 0x9A, 0xC3}, make([]byte, 30)...)} {
		if IsAggregated(d) {
			t.Errorf("IsAggregated(%x) = true", d)
		}
	}
	if !IsAggregated(append(append([]byte{}, Magic...), make([]byte, 16)...)) {
		t.Error("IsAggregated(magic+16 bytes) = false")
	}
}

func TestEffectiveHashKey(t *testing.T) {
	// Independent calculation: md5("pk") as two big-endian uint64 halves,
	// hi*2^64 + lo, in decimal.
	sum := md5.Sum([]byte("pk"))
	hi, lo := binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:])
	want := new(big.Int).Lsh(new(big.Int).SetUint64(hi), 64)
	want.Add(want, new(big.Int).SetUint64(lo))
	if got := EffectiveHashKey(UserRecord{PartitionKey: "pk"}); got != want.String() {
		t.Fatalf("EffectiveHashKey(pk) = %s, want %s", got, want)
	}
	// md5("pk") = 1cd3c693132f4c31b5b5e5f4c5eed6bd; the decimal value was
	// computed outside Go (python3: int(hashlib.md5(b"pk").hexdigest(), 16)).
	const pkHash = "38317986088707300215492326132921849533"
	if got := EffectiveHashKey(UserRecord{PartitionKey: "pk"}); got != pkHash {
		t.Fatalf("EffectiveHashKey(pk) = %s, want %s", got, pkHash)
	}
	if got := EffectiveHashKey(UserRecord{PartitionKey: "pk", ExplicitHashKey: "42"}); got != "42" {
		t.Fatalf("explicit hash key ignored: %s", got)
	}
}

func TestInRange(t *testing.T) {
	const max = "340282366920938463463374607431768211455" // 2^128-1
	cases := []struct {
		k, s, e string
		want    bool
	}{
		{"0", "0", max, true},
		{max, "0", max, true},
		{"5", "5", "10", true},
		{"10", "5", "10", true},
		{"4", "5", "10", false},
		{"11", "5", "10", false},
		{"170141183460469231731687303715884105728", "0", "170141183460469231731687303715884105727", false},
		{"170141183460469231731687303715884105728", "170141183460469231731687303715884105728", max, true},
		{"340282366920938463463374607431768211456", "0", max, false},
		{"x", "0", max, false},
		{"1", "", max, false},
		{"1", "0", "nope", false},
	}
	for _, c := range cases {
		if got := InRange(c.k, c.s, c.e); got != c.want {
			t.Errorf("InRange(%s, %s, %s) = %v, want %v", c.k, c.s, c.e, got, c.want)
		}
	}
}
