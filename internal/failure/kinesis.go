package failure

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/kinactor/kinactor/internal/putrecords"
)

// The PutRecords limits a call is cut by.
const (
	maxPutRecords   = 500
	maxPutBytes     = 5 << 20 // data and partition keys of one call
	maxRecordBytes  = 1 << 20 // data and partition key of one record
	kinesisCallWait = 30 * time.Second
)

// Stream is a Destination writing each Entry, in its JSON form, as one
// record of a Kinesis stream, under the entry's own partition key, so the
// entries of one key land in one shard in order, as far as putrecords
// keeps it: a call's failed entries are sent again, alone and in order,
// so an entry of the key that the same call wrote may come before them.
// Write returns nil only once every entry is in. An Entry whose JSON
// and key exceed Kinesis's 1 MiB per record (a payload of about 750 KiB)
// cannot be written: Write fails for it, every time.
type Stream struct {
	w putrecords.Writer
}

// NewStream returns the Stream destination writing to the named stream
// with client (a *kinesis.Client).
func NewStream(client putrecords.Client, stream string) *Stream {
	return &Stream{w: putrecords.Writer{Client: client, Stream: stream, RetryCalls: true, CallTimeout: kinesisCallWait}}
}

// Write puts entries in calls of at most 500 records and 5 MiB.
func (s *Stream) Write(ctx context.Context, entries []Entry) error {
	var call []types.PutRecordsRequestEntry
	size := 0
	flush := func() error {
		if len(call) == 0 {
			return nil
		}
		_, err := s.w.Put(ctx, call)
		call, size = call[:0], 0
		if err != nil {
			return fmt.Errorf("failure destination kinesis:%s: %w", s.w.Stream, err)
		}
		return nil
	}
	for _, e := range entries {
		data, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("failure destination kinesis:%s: %w", s.w.Stream, err)
		}
		pk := e.PartitionKey
		if pk == "" {
			pk = e.Shard // Kinesis requires a key; a record always has one
		}
		n := len(data) + len(pk)
		if n > maxRecordBytes {
			return fmt.Errorf("failure destination kinesis:%s: the entry of %s %s/%d is %d bytes, over Kinesis's 1 MiB per record", s.w.Stream, e.Shard, e.SequenceNumber, e.SubSequenceNumber, n)
		}
		if len(call) == maxPutRecords || size+n > maxPutBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		call = append(call, types.PutRecordsRequestEntry{PartitionKey: aws.String(pk), Data: data})
		size += n
	}
	return flush()
}
