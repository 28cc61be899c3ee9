package record

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/s2"
)

// Avro object container files (OCF) of already-encoded records.
//
// goavro's OCF writer only appends native (map) values; records here are
// encoded once on the hot path, so the container framing — header, deflate
// blocks, sync markers — is written here, and tests read every file back
// with goavro's OCF reader (and ours reads goavro's files).

var ocfMagic = []byte{'O', 'b', 'j', 1}

// Codecs of OCF blocks. Snappy (Avro's: each block followed by the
// big-endian CRC32 of its uncompressed bytes) is what lockstream writes:
// its records are mostly ciphertexts, which do not compress, and on the
// raw and published files of 1M events deflate saved 19% of the bytes
// (1.23x) for ~1.5 s of CPU per write and ~1 s per read, snappy 16%
// (1.19x) for 0.25 s and 0.04 s (github.com/golang/snappy's encoder; the
// s2 encoder used now is faster, flush). Readers take all three; BigQuery
// loads Avro with either codec.
const (
	CodecNull    = "null"
	CodecDeflate = "deflate"
	CodecSnappy  = "snappy"
)

// DefaultBlockBytes is the uncompressed size at which a block is flushed.
const DefaultBlockBytes = 256 << 10

// SyncMarker derives a file's 16-byte sync marker from a name, so that
// writing the same records to the same file twice gives identical bytes
// (immutable datasets are verified by checksum on re-runs).
func SyncMarker(name string) [16]byte {
	h := sha256.Sum256([]byte("lockstream/ocf-sync/v1\x00" + name))
	var s [16]byte
	copy(s[:], h[:16])
	return s
}

// OCFWriter writes an Avro object container file of pre-encoded records.
type OCFWriter struct {
	w       io.Writer
	sync    [16]byte
	codec   string
	block   []byte
	count   int64
	records int64
	limit   int
	zbuf    bytes.Buffer
	zw      *flate.Writer
	snap    []byte // a snappy block being written
	err     error
}

// NewOCFWriter writes the header (schema and codec) and returns a writer.
func NewOCFWriter(w io.Writer, schemaJSON []byte, sync [16]byte, codec string) (*OCFWriter, error) {
	if codec != CodecNull && codec != CodecDeflate && codec != CodecSnappy {
		return nil, fmt.Errorf("record: OCF codec %q not supported (null, deflate, snappy)", codec)
	}
	h := append([]byte(nil), ocfMagic...)
	h = appendLong(h, 2)
	h = appendString(h, "avro.codec")
	h = appendString(h, codec)
	h = appendString(h, "avro.schema")
	h = appendBytes(h, schemaJSON)
	h = appendLong(h, 0)
	h = append(h, sync[:]...)
	if _, err := w.Write(h); err != nil {
		return nil, fmt.Errorf("record: write OCF header: %w", err)
	}
	o := &OCFWriter{w: w, sync: sync, codec: codec, limit: DefaultBlockBytes}
	if b, ok := blockBufs.Get().(*[]byte); ok {
		o.block = (*b)[:0]
	}
	return o, nil
}

// Append adds one Avro-encoded record (it must match the header's schema).
func (o *OCFWriter) Append(rec []byte) error {
	if o.err != nil {
		return o.err
	}
	o.block = append(o.block, rec...)
	o.count++
	o.records++
	if len(o.block) >= o.limit {
		return o.flush()
	}
	return nil
}

// Records is the number of records appended so far.
func (o *OCFWriter) Records() int64 { return o.records }

func (o *OCFWriter) flush() error {
	if o.count == 0 || o.err != nil {
		return o.err
	}
	data := o.block
	if o.codec == CodecSnappy {
		// s2's Snappy encoder: Snappy's format, any Snappy reader decodes
		// it; on a block of encrypted records 1.4x the speed of
		// github.com/golang/snappy's, and 6% smaller (BenchmarkSnappyBlock).
		z := s2.EncodeSnappy(o.snap[:cap(o.snap)], o.block) // uses o.snap when long enough
		data = binary.BigEndian.AppendUint32(z, crc32.ChecksumIEEE(o.block))
		o.snap = data[:0]
	}
	if o.codec == CodecDeflate {
		o.zbuf.Reset()
		if o.zw == nil {
			if zw, ok := flateWriters.Get().(*flate.Writer); ok {
				o.zw = zw
				o.zw.Reset(&o.zbuf)
			} else {
				o.zw, _ = flate.NewWriter(&o.zbuf, flate.BestSpeed) // ciphertexts do not compress; speed wins
			}
		} else {
			o.zw.Reset(&o.zbuf)
		}
		if _, err := o.zw.Write(o.block); err != nil {
			o.err = err
			return err
		}
		if err := o.zw.Close(); err != nil {
			o.err = err
			return err
		}
		data = o.zbuf.Bytes()
	}
	hdr := appendLong(nil, o.count)
	hdr = appendLong(hdr, int64(len(data)))
	for _, p := range [][]byte{hdr, data, o.sync[:]} {
		if _, err := o.w.Write(p); err != nil {
			o.err = fmt.Errorf("record: write OCF block: %w", err)
			return o.err
		}
	}
	o.block, o.count = o.block[:0], 0
	return nil
}

// Close flushes the last block. It does not close the underlying writer.
// The writer's compressor and buffers go back to a pool for the next file
// (a deflate writer is ~600 KB: one per file was a tenth of ingest's
// allocations).
func (o *OCFWriter) Close() error {
	err := o.flush()
	if o.zw != nil {
		o.zw.Reset(io.Discard)
		flateWriters.Put(o.zw)
		o.zw = nil
	}
	if cap(o.block) <= 2*o.limit {
		b := o.block[:0]
		blockBufs.Put(&b)
	}
	o.block, o.snap = nil, nil
	o.zbuf = bytes.Buffer{}
	return err
}

var (
	flateWriters sync.Pool // *flate.Writer at BestSpeed
	blockBufs    sync.Pool // *[]byte, a block being filled
)

// OCFReader reads an object container file block by block and hands out
// each record's encoded bytes, split with the schema's field kinds.
type OCFReader struct {
	r      *bufio.Reader
	Schema []byte // the writer's schema JSON
	Codec  string
	sync   [16]byte
	skip   func([]byte) (int, error)

	block []byte
	left  int64
	buf   []byte
	src   bytes.Reader  // a deflated block
	zr    io.ReadCloser // its inflater, reset for each block
	plain bytes.Buffer  // the inflated block
	snap  []byte        // a snappy block, uncompressed
}

// ErrCorrupt is wrapped by errors of unreadable container files.
var ErrCorrupt = errors.New("record: corrupt Avro container file")

// NewOCFReader reads the header. skip returns the length of the first
// record in a buffer (see Layout.Skip). Next calls it once per record it
// returns, on the bytes that start with that record, and on nothing else:
// a skip that decodes as it measures (Layout.SkipInto) leaves the columns
// of the record Next returned.
func NewOCFReader(r io.Reader, skip func([]byte) (int, error)) (*OCFReader, error) {
	o := &OCFReader{}
	if err := o.Reset(r, skip); err != nil {
		return nil, err
	}
	return o, nil
}

// Reset makes o read another file, as NewOCFReader would, keeping its
// buffers: a reader of many files one after the other reuses one.
func (o *OCFReader) Reset(r io.Reader, skip func([]byte) (int, error)) error {
	if o.r == nil {
		o.r = bufio.NewReaderSize(r, 64<<10)
	} else {
		o.r.Reset(r)
	}
	br := o.r
	o.skip, o.Schema, o.Codec, o.block, o.left = skip, nil, CodecNull, nil, 0
	var magic [4]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil || !bytes.Equal(magic[:], ocfMagic) {
		return fmt.Errorf("%w: no Avro magic", ErrCorrupt)
	}
	for {
		n, err := readLong(br)
		if err != nil {
			return fmt.Errorf("%w: header: %v", ErrCorrupt, err)
		}
		if n == 0 {
			break
		}
		if n < 0 {
			n = -n
			if _, err := readLong(br); err != nil {
				return fmt.Errorf("%w: header: %v", ErrCorrupt, err)
			}
		}
		for ; n > 0; n-- {
			k, err := readBytes(br, 1<<10)
			if err != nil {
				return fmt.Errorf("%w: header key: %v", ErrCorrupt, err)
			}
			v, err := readBytes(br, 1<<20)
			if err != nil {
				return fmt.Errorf("%w: header value: %v", ErrCorrupt, err)
			}
			switch string(k) {
			case "avro.schema":
				o.Schema = v
			case "avro.codec":
				o.Codec = string(v)
			}
		}
	}
	if o.Codec != CodecNull && o.Codec != CodecDeflate && o.Codec != CodecSnappy {
		return fmt.Errorf("record: OCF codec %q not supported", o.Codec)
	}
	if _, err := io.ReadFull(br, o.sync[:]); err != nil {
		return fmt.Errorf("%w: sync marker: %v", ErrCorrupt, err)
	}
	return nil
}

// Next returns the next record's encoded bytes (valid until the next call),
// or io.EOF after the last one.
func (o *OCFReader) Next() ([]byte, error) {
	for o.left == 0 {
		if err := o.readBlock(); err != nil {
			return nil, err
		}
	}
	n, err := o.skip(o.block)
	if err != nil {
		return nil, fmt.Errorf("%w: record: %v", ErrCorrupt, err)
	}
	rec := o.block[:n]
	o.block = o.block[n:]
	o.left--
	if o.left == 0 && len(o.block) != 0 {
		return nil, fmt.Errorf("%w: %d stray bytes at the end of a block", ErrCorrupt, len(o.block))
	}
	return rec, nil
}

func (o *OCFReader) readBlock() error {
	count, err := readLong(o.r)
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return fmt.Errorf("%w: block count: %v", ErrCorrupt, err)
	}
	size, err := readLong(o.r)
	if err != nil || count < 0 || size < 0 || size > 1<<30 {
		return fmt.Errorf("%w: block header", ErrCorrupt)
	}
	if int64(cap(o.buf)) < size {
		o.buf = make([]byte, size)
	}
	data := o.buf[:size]
	if _, err := io.ReadFull(o.r, data); err != nil {
		return fmt.Errorf("%w: block data: %v", ErrCorrupt, err)
	}
	var s [16]byte
	if _, err := io.ReadFull(o.r, s[:]); err != nil || s != o.sync {
		return fmt.Errorf("%w: sync marker mismatch", ErrCorrupt)
	}
	if o.Codec == CodecSnappy {
		if len(data) < 4 {
			return fmt.Errorf("%w: snappy block without checksum", ErrCorrupt)
		}
		plain, err := s2.Decode(o.snap[:cap(o.snap)], data[:len(data)-4]) // into o.snap when long enough
		if err != nil {
			return fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		if crc32.ChecksumIEEE(plain) != binary.BigEndian.Uint32(data[len(data)-4:]) {
			return fmt.Errorf("%w: snappy block checksum mismatch", ErrCorrupt)
		}
		o.snap = plain[:0]
		data = plain
	}
	if o.Codec == CodecDeflate {
		// The inflater and its output buffer are reused from block to block
		// (a fresh reader and io.ReadAll's growing buffer per block were a
		// fifth of hourly's CPU, most of it zeroing and copying).
		o.src.Reset(data)
		if o.zr == nil {
			o.zr = flate.NewReader(&o.src)
		} else if err := o.zr.(flate.Resetter).Reset(&o.src, nil); err != nil {
			return fmt.Errorf("%w: deflate: %v", ErrCorrupt, err)
		}
		o.plain.Reset()
		if _, err := o.plain.ReadFrom(o.zr); err != nil {
			return fmt.Errorf("%w: deflate: %v", ErrCorrupt, err)
		}
		data = o.plain.Bytes()
	}
	o.block, o.left = data, count
	return nil
}

// CountBlocks counts the records of the remaining blocks from their
// headers, checking each block's size and sync marker but not inflating or
// decoding it: a file's framing and record count, for a reader that holds
// a checksum of what was written (hourly's manifest check).
func (o *OCFReader) CountBlocks() (int64, error) {
	var total int64
	for {
		count, err := readLong(o.r)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return 0, fmt.Errorf("%w: block count: %v", ErrCorrupt, err)
		}
		size, err := readLong(o.r)
		if err != nil || count < 0 || size < 0 || size > 1<<30 {
			return 0, fmt.Errorf("%w: block header", ErrCorrupt)
		}
		if n, err := o.r.Discard(int(size)); err != nil || int64(n) != size {
			return 0, fmt.Errorf("%w: block data: %v", ErrCorrupt, err)
		}
		var s [16]byte
		if _, err := io.ReadFull(o.r, s[:]); err != nil || s != o.sync {
			return 0, fmt.Errorf("%w: sync marker mismatch", ErrCorrupt)
		}
		total += count
	}
}

func readLong(r io.ByteReader) (int64, error) {
	u, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, err
	}
	return int64(u>>1) ^ -int64(u&1), nil
}

func readBytes(r *bufio.Reader, max int64) ([]byte, error) {
	n, err := readLong(r)
	if err != nil {
		return nil, err
	}
	if n < 0 || n > max {
		return nil, errors.New("length out of range")
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}
