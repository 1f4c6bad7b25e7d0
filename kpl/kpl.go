// Package kpl owns the Kinesis Producer Library (KPL) aggregated-record
// format: detecting, de-aggregating and (for tests and producers)
// aggregating.
//
// A KPL aggregated record is the 4 magic bytes F3 89 9A C2, a protobuf
// AggregatedRecord (proto2, see aggregation-format.md of the KPL), and the
// 16-byte MD5 digest of the protobuf bytes:
//
//	message AggregatedRecord {
//	  repeated string partition_key_table     = 1;
//	  repeated string explicit_hash_key_table = 2;
//	  repeated Record records                 = 3;
//	}
//	message Tag {
//	  required string key   = 1;
//	  optional string value = 2;
//	}
//	message Record {
//	  required uint64 partition_key_index     = 1;
//	  optional uint64 explicit_hash_key_index = 2;
//	  required bytes  data                    = 3;
//	  repeated Tag    tags                    = 4;
//	}
//
// The protobuf is read and written with google.golang.org/protobuf's
// protowire package (a wire-level walk, no generated code). Parsing follows
// the semantics of proto.Unmarshal for the schema above: unknown fields are
// skipped, a known field with the wrong wire type is treated as unknown, the
// last value of a repeated scalar wins, and missing required fields
// (including a Tag's key) are an error. The tests cross-check this against
// proto.Unmarshal into a dynamicpb message built from the same schema.
package kpl

import (
	"bytes"
	"crypto/md5"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Magic is the prefix of every KPL aggregated record.
var Magic = []byte{0xF3, 0x89, 0x9A, 0xC2}

// digestSize is the length of the MD5 digest that ends an aggregated record.
const digestSize = md5.Size

// UserRecord is one record inside a KPL aggregated record.
type UserRecord struct {
	PartitionKey    string
	ExplicitHashKey string // "" if none
	Data            []byte
	// SubSequenceNumber is the record's index in the aggregate (0..n-1).
	// Aggregate ignores it.
	SubSequenceNumber int64
}

// Sentinel errors returned (wrapped with detail) by Deaggregate.
var (
	ErrBadDigest   = errors.New("kpl: MD5 digest mismatch")
	ErrBadProtobuf = errors.New("kpl: malformed AggregatedRecord protobuf")
	ErrBadIndex    = errors.New("kpl: table index out of range")
)

// Field numbers of the schema.
const (
	fieldPartitionKeyTable    protowire.Number = 1
	fieldExplicitHashKeyTable protowire.Number = 2
	fieldRecords              protowire.Number = 3

	fieldPartitionKeyIndex    protowire.Number = 1
	fieldExplicitHashKeyIndex protowire.Number = 2
	fieldData                 protowire.Number = 3
	fieldTags                 protowire.Number = 4

	fieldTagKey   protowire.Number = 1
	fieldTagValue protowire.Number = 2
)

// IsAggregated reports whether data starts with the KPL magic and is long
// enough to hold the magic and the digest.
func IsAggregated(data []byte) bool {
	return len(data) >= len(Magic)+digestSize && bytes.HasPrefix(data, Magic)
}

// Deaggregate splits a KPL aggregated record into its user records, with
// SubSequenceNumber set to each record's index. It returns an error, never
// panics, when data is not aggregated, the digest does not match
// (ErrBadDigest), the protobuf is malformed (ErrBadProtobuf) or a table index
// is out of range (ErrBadIndex); callers then deliver the Kinesis record
// whole. A malformed protobuf is reported in preference to a bad index.
//
// The returned Data slices alias data (no copy); the keys are copied.
func Deaggregate(data []byte) ([]UserRecord, error) {
	if !IsAggregated(data) {
		return nil, fmt.Errorf("%w: no KPL magic or too short (%d bytes)", ErrBadProtobuf, len(data))
	}
	pb := data[len(Magic) : len(data)-digestSize]
	sum := md5.Sum(pb)
	if !bytes.Equal(sum[:], data[len(data)-digestSize:]) {
		return nil, fmt.Errorf("%w: computed %x, record has %x", ErrBadDigest, sum, data[len(data)-digestSize:])
	}

	// Pass 1: validate the top level, count table entries and records, so
	// that everything below is allocated once. Fields may come in any
	// order, so the tables are complete only after a full pass.
	var nPK, nEHK, nRec, keyBytes int
	err := walkTop(pb, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldPartitionKeyTable:
			nPK++
			keyBytes += len(v)
		case fieldExplicitHashKeyTable:
			nEHK++
			keyBytes += len(v)
		case fieldRecords:
			nRec++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Pass 2: the tables, as substrings of one string holding all keys.
	var keys strings.Builder
	keys.Grow(keyBytes)
	_ = walkTop(pb, func(num protowire.Number, v []byte) error {
		if num == fieldPartitionKeyTable || num == fieldExplicitHashKeyTable {
			keys.Write(v)
		}
		return nil
	})
	all := keys.String()
	tables := make([]string, nPK+nEHK)
	pkTable, ehkTable := tables[:0:nPK], tables[nPK:nPK:nPK+nEHK]
	off := 0
	_ = walkTop(pb, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldPartitionKeyTable:
			pkTable = append(pkTable, all[off:off+len(v)])
			off += len(v)
		case fieldExplicitHashKeyTable:
			ehkTable = append(ehkTable, all[off:off+len(v)])
			off += len(v)
		}
		return nil
	})

	// Pass 3: the records.
	out := make([]UserRecord, 0, nRec)
	var indexErr error
	err = walkTop(pb, func(num protowire.Number, v []byte) error {
		if num != fieldRecords {
			return nil
		}
		i := len(out)
		r, err := parseRecord(v)
		if err != nil {
			return fmt.Errorf("record %d: %w", i, err)
		}
		u := UserRecord{Data: r.data, SubSequenceNumber: int64(i)}
		if r.pkIndex < uint64(len(pkTable)) {
			u.PartitionKey = pkTable[r.pkIndex]
		} else if indexErr == nil {
			indexErr = fmt.Errorf("%w: record %d: partition_key_index %d, table has %d", ErrBadIndex, i, r.pkIndex, len(pkTable))
		}
		if r.hasEHK {
			if r.ehkIndex < uint64(len(ehkTable)) {
				u.ExplicitHashKey = ehkTable[r.ehkIndex]
			} else if indexErr == nil {
				indexErr = fmt.Errorf("%w: record %d: explicit_hash_key_index %d, table has %d", ErrBadIndex, i, r.ehkIndex, len(ehkTable))
			}
		}
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if indexErr != nil {
		return nil, indexErr
	}
	return out, nil
}

// walkTop walks the fields of an AggregatedRecord, calling fn with the value
// of each of the three known fields (length-delimited) and skipping unknown
// ones. It stops at the first error, from the wire or from fn.
func walkTop(b []byte, fn func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protoErr("AggregatedRecord tag", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: AggregatedRecord field number %d out of range", ErrBadProtobuf, num)
		}
		b = b[n:]
		if typ == protowire.BytesType && num >= fieldPartitionKeyTable && num <= fieldRecords {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protoErr(fmt.Sprintf("AggregatedRecord field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			if err := fn(num, v); err != nil {
				return err
			}
			continue
		}
		// A known field with another wire type is an unknown field, as for
		// proto.Unmarshal.
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protoErr(fmt.Sprintf("AggregatedRecord unknown field %d", num), protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

// rawRecord is a Record as read off the wire, before table lookups.
type rawRecord struct {
	pkIndex  uint64
	ehkIndex uint64
	hasEHK   bool
	data     []byte
}

func protoErr(where string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrBadProtobuf, where, err)
}

// parseRecord reads one Record message.
func parseRecord(b []byte) (rawRecord, error) {
	var r rawRecord
	var hasPK, hasData bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protoErr("Record tag", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return r, fmt.Errorf("%w: Record field number %d out of range", ErrBadProtobuf, num)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldPartitionKeyIndex || num == fieldExplicitHashKeyIndex):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return r, protoErr(fmt.Sprintf("Record field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldPartitionKeyIndex {
				r.pkIndex, hasPK = v, true
			} else {
				r.ehkIndex, r.hasEHK = v, true
			}
		case typ == protowire.BytesType && (num == fieldData || num == fieldTags):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, protoErr(fmt.Sprintf("Record field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			if num == fieldData {
				r.data, hasData = v, true
			} else if err := checkTag(v); err != nil {
				return r, err
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, protoErr(fmt.Sprintf("Record unknown field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !hasPK {
		return r, fmt.Errorf("%w: Record: required partition_key_index missing", ErrBadProtobuf)
	}
	if !hasData {
		return r, fmt.Errorf("%w: Record: required data missing", ErrBadProtobuf)
	}
	if r.data == nil {
		r.data = []byte{}
	}
	return r, nil
}

// checkTag validates one Tag message (tags are not surfaced, but a malformed
// tag makes the aggregate malformed, as it does for proto.Unmarshal).
func checkTag(b []byte) error {
	var hasKey bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protoErr("Tag tag", protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: Tag field number %d out of range", ErrBadProtobuf, num)
		}
		b = b[n:]
		if typ == protowire.BytesType && num == fieldTagKey {
			hasKey = true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protoErr(fmt.Sprintf("Tag field %d", num), protowire.ParseError(n))
		}
		b = b[n:]
	}
	if !hasKey {
		return fmt.Errorf("%w: Tag: required key missing", ErrBadProtobuf)
	}
	return nil
}

// Aggregate builds a KPL aggregated record holding records, in order.
// Partition keys and explicit hash keys are deduplicated into the tables;
// SubSequenceNumber is ignored. It fails only on an empty list.
func Aggregate(records []UserRecord) ([]byte, error) {
	if len(records) == 0 {
		return nil, errors.New("kpl: Aggregate: no records")
	}
	pkIndex := make(map[string]uint64)
	ehkIndex := make(map[string]uint64)
	var pkTable, ehkTable []string
	type idx struct{ pk, ehk uint64 }
	idxs := make([]idx, len(records))
	size := 0
	for i, r := range records {
		pk, ok := pkIndex[r.PartitionKey]
		if !ok {
			pk = uint64(len(pkTable))
			pkIndex[r.PartitionKey] = pk
			pkTable = append(pkTable, r.PartitionKey)
			size += protowire.SizeTag(fieldPartitionKeyTable) + protowire.SizeBytes(len(r.PartitionKey))
		}
		idxs[i].pk = pk
		if r.ExplicitHashKey != "" {
			ehk, ok := ehkIndex[r.ExplicitHashKey]
			if !ok {
				ehk = uint64(len(ehkTable))
				ehkIndex[r.ExplicitHashKey] = ehk
				ehkTable = append(ehkTable, r.ExplicitHashKey)
				size += protowire.SizeTag(fieldExplicitHashKeyTable) + protowire.SizeBytes(len(r.ExplicitHashKey))
			}
			idxs[i].ehk = ehk
		}
		size += protowire.SizeTag(fieldRecords) + protowire.SizeBytes(recordSize(r, idxs[i].pk, idxs[i].ehk))
	}

	out := make([]byte, 0, len(Magic)+size+digestSize)
	out = append(out, Magic...)
	for _, k := range pkTable {
		out = protowire.AppendTag(out, fieldPartitionKeyTable, protowire.BytesType)
		out = protowire.AppendString(out, k)
	}
	for _, k := range ehkTable {
		out = protowire.AppendTag(out, fieldExplicitHashKeyTable, protowire.BytesType)
		out = protowire.AppendString(out, k)
	}
	for i, r := range records {
		out = protowire.AppendTag(out, fieldRecords, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(recordSize(r, idxs[i].pk, idxs[i].ehk)))
		out = protowire.AppendTag(out, fieldPartitionKeyIndex, protowire.VarintType)
		out = protowire.AppendVarint(out, idxs[i].pk)
		if r.ExplicitHashKey != "" {
			out = protowire.AppendTag(out, fieldExplicitHashKeyIndex, protowire.VarintType)
			out = protowire.AppendVarint(out, idxs[i].ehk)
		}
		out = protowire.AppendTag(out, fieldData, protowire.BytesType)
		out = protowire.AppendBytes(out, r.Data)
	}
	sum := md5.Sum(out[len(Magic):])
	return append(out, sum[:]...), nil
}

// recordSize is the encoded size of one Record message body.
func recordSize(r UserRecord, pk, ehk uint64) int {
	n := protowire.SizeTag(fieldPartitionKeyIndex) + protowire.SizeVarint(pk)
	if r.ExplicitHashKey != "" {
		n += protowire.SizeTag(fieldExplicitHashKeyIndex) + protowire.SizeVarint(ehk)
	}
	return n + protowire.SizeTag(fieldData) + protowire.SizeBytes(len(r.Data))
}

// EffectiveHashKey returns the hash key a user record maps to: its explicit
// hash key if set, else the MD5 of its partition key as a 128-bit unsigned
// decimal string (as Kinesis does).
func EffectiveHashKey(r UserRecord) string {
	if r.ExplicitHashKey != "" {
		return r.ExplicitHashKey
	}
	sum := md5.Sum([]byte(r.PartitionKey))
	return new(big.Int).SetBytes(sum[:]).String()
}

// InRange reports whether a decimal hash key lies within [start, end]
// (decimal strings, compared with math/big). Any unparsable argument gives
// false.
func InRange(hashKey, start, end string) bool {
	k, ok1 := new(big.Int).SetString(hashKey, 10)
	s, ok2 := new(big.Int).SetString(start, 10)
	e, ok3 := new(big.Int).SetString(end, 10)
	if !ok1 || !ok2 || !ok3 {
		return false
	}
	return k.Cmp(s) >= 0 && k.Cmp(e) <= 0
}
